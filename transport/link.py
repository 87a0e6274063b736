"""The Link interface algorithms talk to, and its in-process implementation.

Algorithms never touch sockets: they ``send`` named tensors with small metadata to a peer and
``recv`` messages. ``Server``/``Client`` implement it over ZeroMQ; ``InProcessHub`` gives the same
semantics inside one process (tests, simulation, the Flower adapter): tensors are encoded with the
named codec and copied, so a receiver never shares memory with the sender, and bytes are counted
as the wire would count them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping
from typing import Any, Protocol

import torch

from fedcore.accounting import ByteMeter
from fedcore.codec import Codec

from .assembly import checked_size, decode_tensor, encode_tensors, group_parts
from .errors import PeerTimeout, TransportError
from .messages import SERVER, Message, SendHandle


class Link(Protocol):
    """send(peer, tensors, meta) / recv() -> Message. A client's peer is always "server"."""

    def send_to(
        self,
        peer: str,
        tensors: Mapping[str, torch.Tensor],
        meta: dict[str, Any] | None = None,
        *,
        step: int = 0,
        codec: str | Codec = "raw",
        tag: str = "data",
    ) -> SendHandle: ...

    def recv(self, timeout: float | None = None) -> Message: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class InProcessEndpoint:
    """One side of an in-process link; created by ``InProcessHub``."""

    def __init__(self, hub: InProcessHub, name: str):
        self.hub, self.name = hub, name
        self.inbox: queue.Queue = queue.Queue()
        self.meter_out, self.meter_in = ByteMeter(), ByteMeter()
        self._seq = 0
        self._lock = threading.Lock()
        self.closed = False

    def send_to(
        self,
        peer: str,
        tensors: Mapping[str, torch.Tensor],
        meta: dict[str, Any] | None = None,
        *,
        step: int = 0,
        codec: str | Codec = "raw",
        tag: str = "data",
    ) -> SendHandle:
        target = self.hub.endpoints.get(peer)
        if target is None or target.closed:
            raise TransportError(f"no peer {peer!r} on this hub")
        specs, wires = encode_tensors(tensors, codec)
        with self._lock:
            self._seq += 1
            seq = self._seq
        # a copy, as a socket would make: the receiver never shares memory with the sender
        groups, copies = group_parts(specs), iter([w.clone() for w in wires])
        received = {}
        for group in groups:
            checked_size(group)
            received[group[0].name] = decode_tensor(group, [next(copies) for _ in group])
        nbytes = sum(s.nbytes for s in specs)
        self.meter_out.add(tag, nbytes)
        target.meter_in.add(tag, nbytes)
        target.inbox.put(
            Message(
                peer=self.name,
                kind=tag,
                meta=dict(meta or {}),
                tensors=received,
                session=self.name,
                step=step,
                seq=seq,
                nbytes=nbytes,
            )
        )
        handle = SendHandle(seq)
        handle.sent.set()
        handle.acked.set()
        return handle

    def send(
        self,
        tensors: Mapping[str, torch.Tensor],
        meta: dict[str, Any] | None = None,
        *,
        step: int = 0,
        codec: str | Codec = "raw",
        tag: str = "data",
    ) -> SendHandle:
        """Client-side shorthand: send to the server."""
        return self.send_to(SERVER, tensors, meta, step=step, codec=codec, tag=tag)

    def recv(self, timeout: float | None = None) -> Message:
        """The next message; raises what was ``report``ed instead (as a socket endpoint raises a
        peer's lease expiry)."""
        try:
            item = self.inbox.get(timeout=timeout)
        except queue.Empty:
            raise PeerTimeout(f"no message within {timeout} s") from None
        if isinstance(item, Exception):
            raise item
        return item

    def report(self, error: Exception) -> None:
        """Make the next ``recv`` raise ``error`` (e.g. ``PeerTimeout(peer=...)`` when the thread
        behind a peer died: an in-process link has no lease to notice it)."""
        self.inbox.put(error)

    def stats(self) -> dict[str, Any]:
        """Bytes and messages sent and received, per message kind (as a socket endpoint's)."""
        return {
            "sent": self.meter_out.snapshot(),
            "received": self.meter_in.snapshot(),
            "sent_messages": dict(self.meter_out.messages),
            "received_messages": dict(self.meter_in.messages),
        }

    def close(self) -> None:
        self.closed = True


class InProcessHub:
    """A star of in-process endpoints: one "server" and any number of named clients."""

    def __init__(self) -> None:
        self.endpoints: dict[str, InProcessEndpoint] = {}

    def endpoint(self, name: str) -> InProcessEndpoint:
        if name in self.endpoints:
            raise ValueError(f"endpoint {name!r} exists already")
        self.endpoints[name] = InProcessEndpoint(self, name)
        return self.endpoints[name]

    def server(self) -> InProcessEndpoint:
        return self.endpoint(SERVER)
