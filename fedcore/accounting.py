"""Byte accounting: every byte that crosses a link is counted, by direction and message kind."""

from __future__ import annotations

from collections import defaultdict

import torch


def tensor_nbytes(tensor: torch.Tensor) -> int:
    """Payload bytes of a tensor on the wire: numel * element size."""
    return tensor.numel() * tensor.element_size()


class ByteMeter:
    """Counts bytes and messages per kind (e.g. ``"h_A"``, ``"dh_B"``) on one link."""

    def __init__(self) -> None:
        self.bytes: dict[str, int] = defaultdict(int)
        self.messages: dict[str, int] = defaultdict(int)

    def add(self, kind: str, nbytes: int) -> None:
        if nbytes < 0:
            raise ValueError(f"byte count must be >= 0, got {nbytes}")
        self.bytes[kind] += nbytes
        self.messages[kind] += 1

    def total(self) -> int:
        return sum(self.bytes.values())

    def snapshot(self) -> dict[str, int]:
        """A plain dict copy of the byte counts per kind."""
        return dict(self.bytes)


def merge_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    """Per-kind totals of two counters (e.g. both directions: a kind like "control" flows both ways)."""
    return {k: a.get(k, 0) + b.get(k, 0) for k in sorted(set(a) | set(b))}
