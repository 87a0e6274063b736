"""What the server sees: token ids beside the h_A rows that crossed the split for them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch


@dataclass
class HiddenSample:
    """``ids`` (N, T) int64 token ids, ``hidden`` (N, T, H) fp32 h_A as the server received it,
    ``mask`` (N, T) bool (True on real tokens). Sequences are right-padded to one T."""

    ids: torch.Tensor
    hidden: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self) -> None:
        n, t = self.ids.shape
        if self.hidden.shape[:2] != (n, t) or self.mask.shape != (n, t):
            raise ValueError(
                f"ids {tuple(self.ids.shape)}, hidden {tuple(self.hidden.shape)} and mask {tuple(self.mask.shape)} "
                "must share (N, T)"
            )

    def __len__(self) -> int:
        return self.ids.shape[0]

    @property
    def tokens(self) -> int:
        """Real tokens in the sample."""
        return int(self.mask.sum())

    def rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The real tokens' h_A rows (M, H) fp32 and ids (M,) int64, in sequence order."""
        return self.hidden[self.mask], self.ids[self.mask]

    def head(self, n: int) -> HiddenSample:
        """The first ``n`` sequences."""
        return HiddenSample(self.ids[:n], self.hidden[:n], self.mask[:n])


def _pad(t: torch.Tensor, width: int, value: float | int | bool) -> torch.Tensor:
    if t.shape[1] == width:
        return t
    pad = torch.full((t.shape[0], width - t.shape[1], *t.shape[2:]), value, dtype=t.dtype)
    return torch.cat([t, pad], dim=1)


@torch.no_grad()
def capture(
    head: torch.nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    *,
    release: Callable[[torch.Tensor], torch.Tensor] | None = None,
    limit: int = 0,
) -> HiddenSample:
    """Run ``head`` (a ``SplitHead``) on ``batches`` (``input_ids`` / ``attention_mask`` (B, T),
    right-padded) and keep what leaves the client: ``release(h_A)`` (noise, clipping, the codec's
    rounding; None: h_A as computed). ``limit`` > 0 keeps at most that many sequences."""
    device = next(iter(head.parameters())).device
    ids, hidden, mask = [], [], []
    kept = 0
    for batch in batches:
        if limit and kept >= limit:
            break
        b_ids, b_mask = batch["input_ids"], batch["attention_mask"]
        if limit:
            b_ids, b_mask = b_ids[: limit - kept], b_mask[: limit - kept]
        h = head(b_ids.to(device), b_mask.to(device)).hidden
        h = (release(h) if release is not None else h).float().cpu()
        ids.append(b_ids.cpu())
        hidden.append(h)
        mask.append(b_mask.cpu().bool())
        kept += b_ids.shape[0]
    if not ids:
        raise ValueError("no batches to capture h_A from")
    width = max(t.shape[1] for t in ids)
    return HiddenSample(
        torch.cat([_pad(t, width, 0) for t in ids]),
        torch.cat([_pad(t, width, 0.0) for t in hidden]),
        torch.cat([_pad(t, width, False) for t in mask]),
    )
