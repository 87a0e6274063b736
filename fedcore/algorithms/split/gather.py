"""Client-batch gathering: several clients' SplitStates as one padded batch, and the slices back.

Clients may differ in batch size and sequence length. Each state is right-padded to the longest
T: hidden with zeros, positions continuing past the last one, the padding mask with False, so a
padded column is never attended to and its rows are cut away on the way back. The result equals
running each client's batch alone (attention only mixes positions within a row).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedcore.model import SplitState


@dataclass(frozen=True)
class Piece:
    """Where one client's rows sit in the gathered batch: rows [start, stop), its first ``steps`` columns."""

    start: int
    stop: int
    steps: int


def gather_states(states: list[SplitState]) -> tuple[SplitState, list[Piece]]:
    """One (sum B_i, max T_i, H) state from ``states`` (training states: no KV cache, P = 0)."""
    if not states:
        raise ValueError("gather_states needs at least one state")
    width = max(s.hidden.shape[1] for s in states)
    hidden, positions, masks, pieces, row = [], [], [], [], 0
    for s in states:
        batch, steps, size = s.hidden.shape
        if s.attention_mask is not None and s.attention_mask.shape[1] != steps:
            raise ValueError("client-batch gathers training states only (no KV cache in the mask)")
        pad = width - steps
        pos = s.position_ids.expand(batch, steps)
        device = s.hidden.device
        mask = (
            s.attention_mask
            if s.attention_mask is not None
            else torch.ones(batch, steps, dtype=torch.bool, device=device)
        )
        hidden.append(torch.cat([s.hidden, s.hidden.new_zeros(batch, pad, size)], dim=1) if pad else s.hidden)
        extra = pos[:, -1:] + torch.arange(1, pad + 1, dtype=pos.dtype, device=pos.device) if pad else None
        positions.append(torch.cat([pos, extra], dim=1) if extra is not None else pos)
        masks.append(
            torch.cat([mask.bool(), mask.new_zeros(batch, pad, dtype=torch.bool)], dim=1) if pad else mask.bool()
        )
        pieces.append(Piece(row, row + batch, steps))
        row += batch
    return SplitState(torch.cat(hidden), torch.cat(positions), torch.cat(masks)), pieces


def scatter(tensor: torch.Tensor, pieces: list[Piece]) -> list[torch.Tensor]:
    """Each client's (B_i, T_i, ...) slice of a gathered (sum B_i, max T_i, ...) tensor (views)."""
    return [tensor[p.start : p.stop, : p.steps] for p in pieces]


def gather_grads(grads: list[torch.Tensor], pieces: list[Piece], like: torch.Tensor) -> torch.Tensor:
    """The inverse of ``scatter`` for gradients: zeros in the padding (B, max T, H) like ``like``."""
    out = torch.zeros_like(like)
    for g, p in zip(grads, pieces, strict=True):
        out[p.start : p.stop, : p.steps] = g
    return out
