"""FedSEA-LLaMA's Gaussian perturbation of h_A before it leaves the client (plain torch).

The fused noise + quantize kernel (fedcore.kernels) replaces this on the hot path.
"""

from __future__ import annotations

import torch


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
