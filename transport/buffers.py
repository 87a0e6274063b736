"""Receive buffers reused across transfers (pinned host memory when CUDA is present).

A fresh large buffer per transfer costs a page fault per 4 KiB page on first touch (glibc serves
allocations over ~32 MiB from new mmaps), which halved plain-TCP throughput at 64 MiB in
bench_transport; ``pin_memory()`` per transfer would cost an allocation and a copy on top. A
buffer returns to the pool when the Message that holds it is released.
"""

from __future__ import annotations

import threading

import torch

POOL_MIN = 1 << 20  # smaller transfers allocate directly: cheap, and not worth a cache slot


def _size_class(nbytes: int) -> int:
    return 1 << max(0, nbytes - 1).bit_length()


class BufferPool:
    """uint8 buffers by power-of-two size class, at most ``per_class`` kept per class."""

    def __init__(self, *, pinned: bool, per_class: int = 2, max_cached_bytes: int = 1 << 30):
        self.pinned, self.per_class, self.max_cached_bytes = pinned, per_class, max_cached_bytes
        self._free: dict[int, list[torch.Tensor]] = {}
        self._cached = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def take(self, nbytes: int) -> torch.Tensor:
        """A uint8 tensor of exactly ``nbytes`` (a view of a pooled buffer when big enough)."""
        if nbytes < POOL_MIN:
            buf = torch.empty(nbytes, dtype=torch.uint8)
            return buf.pin_memory() if self.pinned and nbytes else buf
        size = _size_class(nbytes)
        with self._lock:
            free = self._free.get(size)
            if free:
                self.hits += 1
                self._cached -= size
                return free.pop()[:nbytes]
            self.misses += 1
        buf = torch.empty(size, dtype=torch.uint8, pin_memory=self.pinned)
        return buf[:nbytes]

    def give(self, buf: torch.Tensor) -> None:
        """Return a buffer from ``take`` once nothing reads it any more."""
        base = buf._base if buf._base is not None else buf
        size = base.numel()
        if size < POOL_MIN or size != _size_class(size):
            return
        with self._lock:
            free = self._free.setdefault(size, [])
            if len(free) < self.per_class and self._cached + size <= self.max_cached_bytes:
                free.append(base)
                self._cached += size
