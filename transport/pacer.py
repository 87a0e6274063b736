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
    """Says when a chunk may be sent. Tokens refill at ``mbps`` up to ``burst_bytes``; a chunk of
    n bytes may leave once the bucket holds n tokens (it fills past ``burst_bytes`` only while
    such a chunk waits) and then takes n from it.
    So after an idle spell ``burst_bytes`` leave at once, and beyond that every chunk leaves when
    the link would have finished carrying it (its serialization delay, which a receiver on
    loopback sees as the chunk's arrival); the long-run rate is exactly ``mbps``. ``nbytes=0``
    (the default) gives the older rule: leave while the balance is >= 0, then go into debt."""

    def __init__(self, shape: LinkShape, clock=time.monotonic):
        self.shape, self._clock = shape, clock
        self._rate = shape.mbps * 1e6 if shape.mbps else None
        self._tokens = float(shape.burst_bytes)
        self._stamp = clock()

    def ready_at(self, enqueued_at: float, nbytes: int = 0) -> float:
        """Earliest clock time the next chunk, of ``nbytes``, may be sent (does not consume)."""
        earliest = enqueued_at + self.shape.latency_ms / 1e3
        if self._rate is None:
            return earliest
        self._refill(nbytes, since=enqueued_at)
        if self._tokens >= nbytes:
            return earliest
        return max(earliest, self._stamp + (nbytes - self._tokens) / self._rate)

    def consume(self, nbytes: int) -> None:
        if self._rate is not None:
            self._refill(nbytes)
            self._tokens -= nbytes

    def _refill(self, waiting: int, since: float | None = None) -> None:
        """Add the tokens earned since the last look: at most ``burst_bytes`` before ``since`` (when
        the waiting chunk was queued), at most max(burst, ``waiting``) after it."""
        assert self._rate is not None
        now = self._clock()
        burst = float(self.shape.burst_bytes)
        if since is not None and self._stamp < since <= now:
            self._tokens = min(burst, self._tokens + (since - self._stamp) * self._rate)
            self._stamp = since
        self._tokens = min(max(burst, float(waiting)), self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
