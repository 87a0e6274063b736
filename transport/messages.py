"""What the transport hands to and takes from its users: messages, send handles, options."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import PeerTimeout
from .pacer import LinkShape

MiB = 1 << 20
SERVER = "server"  # a client's only peer id


@dataclass
class Message:
    """A received transfer.

    ``peer``: the sender (a client's z85 CURVE public key, or its routing id in hex on a plaintext
    link; ``"server"`` on the client side). ``tensors`` are CPU tensors (in pinned memory when
    the endpoint stages through pinned slots), decoded to the sender's dtypes. ``nbytes``: payload
    bytes on the wire.
    """

    peer: str
    kind: str
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    session: str
    step: int
    seq: int
    nbytes: int
    _buffer: torch.Tensor | None = field(default=None, repr=False, compare=False)
    _release: Any = field(default=None, repr=False, compare=False)

    def release(self) -> None:
        """Hand the receive buffer back for reuse. Raw-codec tensors are views of it: do not use
        them afterwards (``clone()`` what you keep). Without a call the buffer is simply freed."""
        if self._buffer is not None and self._release is not None:
            buffer, self._buffer = self._buffer, None
            self.tensors = {}
            self._release(buffer)

    def __enter__(self) -> Message:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class SendHandle:
    """Tracks one outgoing transfer: ``sent`` once every chunk left (its buffers may be reused),
    ``acked`` once the peer confirmed it received the whole transfer."""

    def __init__(self, seq: int):
        self.seq = seq
        self.sent = threading.Event()
        self.acked = threading.Event()
        self.error: Exception | None = None

    def fail(self, error: Exception) -> None:
        """Record why the transfer will not be acknowledged. ``sent`` is still set only once
        libzmq released the frames (the endpoint does that), so buffers are never reused early."""
        self.error = error
        self.acked.set()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the peer acknowledged the transfer; raise what went wrong otherwise."""
        if not self.acked.wait(timeout):
            raise PeerTimeout(f"transfer {self.seq} not acknowledged within {timeout} s")
        if self.error is not None:
            raise self.error


@dataclass(kw_only=True)
class EndpointOptions:
    """Knobs shared by Server and Client.

    chunk_bytes: payload per ZeroMQ message (4-16 MiB: big enough to amortise per-message cost,
        small enough that a multipart message, delivered whole, never holds a whole tensor).
    max_transfer_bytes: per-transfer cap, checked from the header before anything is allocated.
    max_inflight_bytes: cap on partially received transfers across all peers.
    lease_s: a peer silent for longer is reported as PeerTimeout; pings go every lease_s / 4.
    heartbeat_ms: ZMTP heartbeat interval (libzmq drops dead TCP connections by itself).
    resend_s: an unacknowledged transfer is sent again after this long (duplicates are dropped
        by the receiver, by (session, seq)); 0 disables.
    hwm: ZeroMQ high-water marks in messages (big frames: keep small).
    link: shaping applied to everything this endpoint sends.
    ban_s: how long a peer that sent a malformed message is ignored.
    io_threads: ZeroMQ I/O threads of the context (CURVE encrypts on them).
    pinned: receive into pinned host memory (default: when CUDA is available).
    """

    chunk_bytes: int = 8 * MiB
    max_transfer_bytes: int = 4 << 30
    max_inflight_bytes: int = 8 << 30
    lease_s: float = 10.0
    heartbeat_ms: int = 1000
    resend_s: float = 0.0
    hwm: int = 8
    link: LinkShape = field(default_factory=LinkShape)
    ban_s: float = 60.0
    io_threads: int = 2
    pinned: bool | None = None

    def __post_init__(self) -> None:
        if not 64 * 1024 <= self.chunk_bytes <= 256 * MiB:
            raise ValueError(
                f"chunk_bytes must be in [64 KiB, 256 MiB] (4-16 MiB suits most links), got {self.chunk_bytes}"
            )
        if self.lease_s <= 0 or self.heartbeat_ms <= 0 or self.hwm < 1 or self.io_threads < 1:
            raise ValueError("lease_s, heartbeat_ms, hwm and io_threads must be positive")
        if self.max_transfer_bytes < 1 or self.max_inflight_bytes < self.max_transfer_bytes:
            raise ValueError("need 1 <= max_transfer_bytes <= max_inflight_bytes")

    @property
    def use_pinned(self) -> bool:
        return torch.cuda.is_available() if self.pinned is None else self.pinned
