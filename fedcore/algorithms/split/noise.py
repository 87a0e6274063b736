"""What a client does to h_A before it leaves: FedSEA-LLaMA's Gaussian perturbation and the
Gaussian mechanism's clipping (plain torch).

The fused clip + noise + quantize kernel (fedcore.kernels, the ``int8+noise`` codec) replaces
these on the hot path; ``HiddenRelease`` is the part a codec does not do.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import torch

from fedcore.privacy.mechanism import clip_hidden


def add_gaussian_noise(
    hidden: torch.Tensor, std: float, *, relative: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Return ``hidden + sigma * N(0, 1)`` (a new tensor, same shape and dtype).

    sigma = ``std * mean(|hidden|)`` over the whole tensor when ``relative`` (FedSEA-LLaMA reports
    mean |h_A| ~ 0.02 with one client block, so an absolute sigma does not transfer across models),
    else sigma = ``std``. Noise is drawn in fp32 from ``generator`` (seed it per client).
    """
    if std < 0:
        raise ValueError(f"noise std must be >= 0, got {std}")
    if std == 0:
        return hidden
    sigma = std * hidden.detach().abs().float().mean() if relative else torch.tensor(std)
    noise = torch.randn(hidden.shape, generator=generator, dtype=torch.float32, device=hidden.device)
    return (hidden.float() + sigma * noise).to(hidden.dtype)


@dataclass(frozen=True)
class HiddenRelease:
    """The client's own pass over h_A (B, T, H) before the codec: clip to ``clip`` by ``unit``
    ("token" rows or "example" matrices; 0: none), then noise of std ``noise_std`` (relative or
    absolute, see ``add_gaussian_noise``). What the codec does itself is not repeated here.

    ``secret``: the noise comes from this object's own generators, seeded from the OS and never
    saved or sent, instead of the caller's (which a server that knows the run's seed, or holds a
    checkpoint, could regenerate and subtract)."""

    noise_std: float = 0.0
    relative: bool = False
    clip: float = 0.0
    unit: str = "token"
    secret: bool = False
    _own: dict[str, torch.Generator] = field(default_factory=dict, compare=False, repr=False)

    def generator_for(self, device: torch.device) -> torch.Generator:
        """This release's OS-seeded generator on ``device`` (``secret`` only)."""
        key = str(device)
        if key not in self._own:
            self._own[key] = torch.Generator(device).manual_seed(secrets.randbits(63))
        return self._own[key]

    def __call__(self, hidden: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.clip > 0:
            hidden = clip_hidden(hidden, self.clip, self.unit)
        if self.secret and self.noise_std > 0:
            generator = self.generator_for(hidden.device)
        return add_gaussian_noise(hidden, self.noise_std, relative=self.relative, generator=generator)
