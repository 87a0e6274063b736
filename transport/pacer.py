"""Link shaping: a token bucket per link in the sender (bandwidth in MB/s, latency in ms).

Deterministic and portable (no tc/netem). Used to reproduce the papers' links: 50/100/150 MB/s
(ParaBlock) and a 1,100 MB/s LAN (FL-GLM).
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class LinkShape:
    """``mbps``: bandwidth in MB/s (10^6 bytes/s), None for unlimited; ``latency_ms``: one-way
    delay added before a message may leave; ``burst_bytes``: bucket depth."""

    mbps: float | None = None
    latency_ms: float = 0.0
    burst_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        if self.mbps is not None and self.mbps <= 0:
            raise ValueError(f"link bandwidth must be > 0 MB/s or None, got {self.mbps}")
        if self.latency_ms < 0 or self.burst_bytes < 1:
            raise ValueError("link latency must be >= 0 ms and burst >= 1 byte")


class TokenBucket:
    """Says when a message may be sent. Tokens refill at ``mbps`` up to ``burst_bytes``; a message
    may leave while the balance is >= 0 and then takes its size from it (the balance may go into
    debt, which later messages wait out), so the long-run rate is exactly ``mbps``."""

    def __init__(self, shape: LinkShape, clock=time.monotonic):
        self.shape, self._clock = shape, clock
        self._rate = shape.mbps * 1e6 if shape.mbps else None
        self._tokens = float(shape.burst_bytes)
        self._stamp = clock()

    def ready_at(self, enqueued_at: float) -> float:
        """Earliest clock time the next message may be sent (does not consume)."""
        earliest = enqueued_at + self.shape.latency_ms / 1e3
        if self._rate is None:
            return earliest
        self._refill()
        if self._tokens >= 0:
            return earliest
        return max(earliest, self._stamp - self._tokens / self._rate)

    def consume(self, nbytes: int) -> None:
        if self._rate is not None:
            self._refill()
            self._tokens -= nbytes

    def _refill(self) -> None:
        assert self._rate is not None
        now = self._clock()
        self._tokens = min(float(self.shape.burst_bytes), self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
