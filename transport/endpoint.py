"""The I/O thread shared by Server and Client: it alone owns the ZeroMQ sockets.

Users call ``send`` (queues a prebuilt transfer, wakes the thread) and ``recv`` (takes completed
transfers or events from a queue). The thread receives chunks straight into the transfer's
buffer (``recv_into``), paces and sends chunks without blocking (a slow peer never stalls the
others), acknowledges transfers, drops duplicates by (session, seq), pings idle peers and reports
peers silent past their lease as ``PeerTimeout``.
"""

from __future__ import annotations

import collections
import math
import os
import queue
import socket
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch
import zmq

from fedcore.accounting import ByteMeter
from fedcore.codec import Codec

from . import wire
from .assembly import Incoming, Outgoing, build_outgoing
from .buffers import BufferPool
from .errors import AuthError, PeerTimeout, ProtocolError, TransportError
from .messages import EndpointOptions, Message, SendHandle
from .pacer import TokenBucket


class _Busy(ProtocolError):
    """The receiver has no room for a transfer now; the sender may retry (not misbehaviour)."""


@dataclass
class Peer:
    """What the I/O thread knows about one peer."""

    pid: str
    sock: zmq.Socket
    route: bytes | None  # ROUTER routing id; None on a DEALER
    bucket: TokenBucket
    last_seen: float = field(default_factory=time.monotonic)
    last_sent: float = field(default_factory=time.monotonic)
    outbox: collections.deque = field(default_factory=collections.deque)  # Outgoing, FIFO
    control: collections.deque = field(default_factory=collections.deque)  # small frames lists
    unacked: dict[int, Outgoing] = field(default_factory=dict)
    incoming: Incoming | None = None
    discard_seq: int | None = None  # a duplicate transfer whose chunks are being skipped
    key: str | None = None  # authenticated CURVE key (z85) bound to this peer
    blocked_since: float | None = None  # sends to this peer have returned EAGAIN since then
    next_sock: Any = None  # after a rekey: switch to it between transfers


class Endpoint(ABC):
    """Base of Server and Client; subclasses open sockets and map frames to peers."""

    peer_label = "peer"

    def __init__(self, options: EndpointOptions | None):
        self.options = options or EndpointOptions()
        self.ctx = zmq.Context(io_threads=self.options.io_threads)
        self.session = os.urandom(8).hex()  # this endpoint's session: (session, seq) names a transfer
        self.meter_out, self.meter_in = ByteMeter(), ByteMeter()
        self.errors: collections.deque = collections.deque(maxlen=100)  # (peer, message) of refused input
        self._inbox: queue.Queue = queue.Queue()
        self._commands: queue.Queue = queue.Queue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._peers: dict[str, Peer] = {}
        self._banned: dict[bytes | str, float] = {}  # route or key -> ignored until
        self._delivered: collections.OrderedDict = collections.OrderedDict()  # peer id -> (session, seq)
        self._inflight = 0
        self._inbox_bytes = 0
        self._inbox_lock = threading.Lock()
        self.buffers = BufferPool(pinned=self.options.use_pinned)
        self._sending: list[Outgoing] = []  # fully queued, waiting for libzmq to release frames
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    # ---------- socket setup helpers ----------
    def _tune(self, sock: zmq.Socket) -> None:
        o = self.options
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, o.hwm)
        sock.setsockopt(zmq.RCVHWM, o.hwm)
        sock.setsockopt(zmq.MAXMSGSIZE, o.chunk_bytes + wire.HEADER_CAP)
        sock.setsockopt(zmq.HEARTBEAT_IVL, o.heartbeat_ms)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, max(3 * o.heartbeat_ms, int(o.lease_s * 1000)))
        sock.setsockopt(zmq.HEARTBEAT_TTL, max(3 * o.heartbeat_ms, int(o.lease_s * 1000)))

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"fedcore-{self.peer_label}-io", daemon=True)
        self._thread.start()

    # ---------- user API ----------
    def _next_seq(self) -> int:
        with self._seq_lock:
            self._seq += 1
            return self._seq

    def _submit(
        self, peer: str | None, tensors, meta, *, step: int, codec: str | Codec, tag: str = "data"
    ) -> SendHandle:
        if self._closed:
            raise TransportError(f"{type(self).__name__} is closed")
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            raise TypeError("meta must be a dict of small plain values")
        if not isinstance(tag, str) or not 0 < len(tag) <= 64:
            raise ValueError(f"tag must be a non-empty str of <= 64 chars, got {tag!r}")
        out = build_outgoing(
            resend=self.options.resend_s > 0,
            seq=self._next_seq(),
            session=self.session,
            step=step,
            kind="data",
            tag=tag,
            meta=meta,
            codec=codec,
            tensors=tensors,
            chunk_bytes=self.options.chunk_bytes,
            max_bytes=self.options.max_transfer_bytes,
        )
        self._commands.put(("send", peer, out))
        self._wake()
        return out.handle

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait up to ``timeout`` s until every transfer queued so far to a peer still in the run
        was acknowledged (or failed); True when none is left. Call it before ``close``, which
        drops unsent data (LINGER 0): a run's last messages, its stop orders, then arrive."""
        if self._closed:
            return True  # close failed whatever was left: nothing waits for an ack any more
        deadline = time.monotonic() + timeout
        listed = threading.Event()
        pending: list[SendHandle] = []
        # commands run in order: by the time the I/O thread lists the peers' transfers, every
        # earlier send sits in an outbox or awaits its ack (or failed: its peer is not connected)
        self._commands.put(("flush", None, (listed, pending)))
        self._wake()
        if not listed.wait(timeout):
            return False
        return all(h.acked.wait(max(0.0, deadline - time.monotonic())) for h in pending)

    def recv(self, timeout: float | None = None) -> Message:
        """The next completed transfer. Raises ``PeerTimeout`` (a peer's lease ran out, or nothing
        arrived within ``timeout`` seconds), or the ``AuthError``/``ProtocolError`` a peer sent."""
        try:
            item = self._inbox.get(timeout=timeout)
        except queue.Empty:
            raise PeerTimeout(f"no message within {timeout} s") from None
        if isinstance(item, Exception):
            raise item
        with self._inbox_lock:
            self._inbox_bytes -= item.nbytes
        return item

    def _deliver(self, message: Message) -> None:
        with self._inbox_lock:
            self._inbox_bytes += message.nbytes
        self._inbox.put(message)

    def stats(self) -> dict[str, Any]:
        """Bytes and messages sent and received, per message kind."""
        return {
            "sent": self.meter_out.snapshot(),
            "received": self.meter_in.snapshot(),
            "sent_messages": dict(self.meter_out.messages),
            "received_messages": dict(self.meter_in.messages),
            "refused": len(self.errors),
        }

    def close(self, timeout: float = 5.0) -> None:
        """Stop the I/O thread and close every socket (LINGER 0: unsent data is dropped)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
        self._close_sockets()
        self._before_term()
        self.ctx.term()  # libzmq has released every frame now
        closed = TransportError(f"{type(self).__name__} closed")
        for peer in self._peers.values():
            for out in [*peer.outbox, *peer.unacked.values()]:
                out.handle.fail(closed)
                out.handle.sent.set()
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                break
            if command[0] == "send":
                command[2].handle.fail(closed)
                command[2].handle.sent.set()
        for out in self._sending:
            out.handle.sent.set()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass  # a full wake pipe already wakes the thread

    # ---------- subclass hooks ----------
    @abstractmethod
    def _sockets(self) -> list[zmq.Socket]:
        """Every socket the I/O thread polls (Server: its ROUTERs; Client: DEALERs + monitors)."""

    def _close_sockets(self) -> None:
        for sock in self._sockets():
            sock.close(linger=0)

    @abstractmethod
    def _read_message(self, sock: zmq.Socket) -> None:
        """Read one message from ``sock`` (non-blocking; raises zmq.Again when there is none)."""

    def _before_term(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Close what else holds sockets in this context (e.g. the ZAP authenticator)."""

    def _handle_command(self, command: tuple) -> None:
        kind, peer_id, out = command
        if kind == "flush":  # list what is not yet acknowledged (a peer that leaves fails its own)
            listed, pending = out
            pending.extend(o.handle for p in self._peers.values() for o in [*p.outbox, *p.unacked.values()])
            listed.set()
            return
        peer = self._route_for(peer_id)
        if peer is None:
            out.handle.fail(TransportError(f"unknown {self.peer_label} {peer_id!r}: not connected"))
            return
        peer.outbox.append(out)

    @abstractmethod
    def _route_for(self, peer_id: str | None) -> Peer | None:
        """The peer a send to ``peer_id`` goes to, or None when it is not connected."""

    def _periodic(self, now: float) -> None:  # noqa: B027 - optional hook, empty by default
        """Subclass housekeeping once per loop (allow-list refresh, key rotation)."""

    # ---------- the loop ----------
    def _run(self) -> None:
        poller = zmq.Poller()
        registered: set = set()
        poller.register(self._wake_r, zmq.POLLIN)
        while not self._stop.is_set():
            try:
                self._step(poller, registered)
            except Exception as err:  # noqa: BLE001 - the I/O thread must outlive any one bad event
                self.errors.append(("io-thread", f"{type(err).__name__}: {err}"))
                time.sleep(0.01)

    def _step(self, poller: zmq.Poller, registered: set) -> None:
        for sock in self._sockets():
            if sock not in registered:
                poller.register(sock, zmq.POLLIN)
                registered.add(sock)
        for sock in list(registered):
            if sock.closed:
                poller.unregister(sock)
                registered.discard(sock)
        events = dict(poller.poll(self._poll_ms()))
        if self._wake_r.fileno() in events or self._wake_r in events:
            try:
                while self._wake_r.recv(4096):
                    pass
            except (BlockingIOError, OSError):
                pass
        while True:
            try:
                self._handle_command(self._commands.get_nowait())
            except queue.Empty:
                break
        paused = self._inbox_bytes > self.options.max_inflight_bytes  # the user is not draining recv()
        for sock in list(registered):
            if events.get(sock) and not paused:
                for _ in range(64):  # bounded: senders do not starve
                    try:
                        self._read_message(sock)
                    except zmq.Again:
                        break
        now = time.monotonic()
        self._flush(now)
        self._release_sent()
        self._housekeeping(now, paused=paused)
        self._periodic(now)

    def _poll_ms(self) -> int:
        """How long the I/O thread may sleep in poll (sockets and the wake-up pipe end it early).
        1 ms while frames await release or control messages wait; while transfers only wait for
        the link shaper, until the earliest may go (polling every 1 ms for seconds of a slow
        shaped link would take the GIL a thousand times a second from the threads computing)."""
        if self._sending or any(p.control for p in self._peers.values()):
            return 1
        waiting = [
            p.bucket.ready_at(p.outbox[0].enqueued, _next_size(p.outbox[0])) for p in self._peers.values() if p.outbox
        ]
        if not waiting:
            return 50
        return max(1, min(50, math.ceil((min(waiting) - time.monotonic()) * 1e3)))

    # ---------- sending ----------
    def _send_frames(self, peer: Peer, frames: list[Any], *, track: bool) -> list[Any]:
        """Send one message without blocking; returns a tracker for every zero-copy payload frame
        (pyzmq's own ``track=`` covers only the last frame)."""
        if track:  # frames under pyzmq's copy threshold are copied at send: only big ones need a tracker
            frames = [frames[0], *(f if len(f) < zmq.COPY_THRESHOLD else zmq.Frame(f, track=True, copy=False)
                                   for f in frames[1:])]  # fmt: skip
        wire_frames = [peer.route, *frames] if peer.route is not None else frames
        peer.sock.send_multipart(wire_frames, flags=zmq.NOBLOCK, copy=False)
        return [f.tracker for f in frames[1:] if isinstance(f, zmq.Frame)] if track else []

    def _control(self, peer: Peer, kind: str, **fields: Any) -> None:
        if kind in ("ping", "pong") and any(k == kind for k, _ in peer.control):
            return  # one pending ping / pong per peer is enough: a stalled peer cannot grow the queue
        peer.control.append((kind, [wire.pack({"v": wire.VERSION, "kind": kind, **fields})]))

    def _flush(self, now: float) -> None:
        for peer in list(self._peers.values()):
            try:
                self._flush_peer(peer, now)
                peer.blocked_since = None
            except zmq.Again:
                peer.blocked_since = peer.blocked_since or now
                continue  # this peer's queue is full; others go on
            except zmq.ZMQError as err:
                if err.errno == zmq.EHOSTUNREACH:  # ROUTER_MANDATORY: the peer is gone
                    self._drop_peer(peer, PeerTimeout(f"{self.peer_label} {peer.pid} is unreachable", peer=peer.pid))
                else:
                    raise

    def _flush_peer(self, peer: Peer, now: float) -> None:
        if peer.next_sock is not None and not peer.outbox and not peer.unacked and peer.incoming is None:
            peer.sock, peer.next_sock = peer.next_sock, None  # a rekey takes effect between transfers
            self._control(peer, "ping")  # the server learns our route on the new socket
        while peer.control:
            kind, frames = peer.control[0]
            self._send_frames(peer, frames, track=False)
            peer.control.popleft()
            self.meter_out.add(kind, len(frames[0]))
            peer.last_sent = now
        while peer.outbox:
            out: Outgoing = peer.outbox[0]
            frames = out.messages[out.next_index]
            size = sum(len(f) for f in frames)
            if peer.bucket.ready_at(out.enqueued, size) > now:
                return
            out.trackers.extend(self._send_frames(peer, frames, track=True))
            peer.bucket.consume(size)
            out.next_index += 1
            peer.last_sent = out.last_sent = now
            if out.next_index == len(out.messages):
                peer.outbox.popleft()
                self.meter_out.add(out.kind, out.nbytes)
                out.sends += 1
                peer.unacked[out.seq] = out
                if out not in self._sending:
                    self._sending.append(out)

    def _release_sent(self) -> None:
        """Mark transfers whose frames libzmq released (MessageTracker.done) as sent."""
        still = []
        resend = self.options.resend_s > 0
        for out in self._sending:
            keep_for_resend = resend and not out.handle.acked.is_set()  # a resend reads them again
            if all(t.done for t in out.trackers) and not keep_for_resend:
                out.trackers.clear()
                out.handle.sent.set()
            else:
                still.append(out)
        self._sending = still

    # ---------- receiving ----------
    def _allocate(self, nbytes: int) -> torch.Tensor:
        if self._inflight + nbytes > self.options.max_inflight_bytes:
            raise _Busy(f"busy: {self._inflight} bytes in flight; transfer of {nbytes} refused, retry later")
        self._inflight += nbytes
        return self.buffers.take(nbytes)

    def _on_frames(self, peer: Peer, sock: zmq.Socket, header: dict[str, Any], more: bool, header_len: int) -> None:
        """Dispatch one message whose header is parsed; payload frames (if any) are still queued."""
        kind = header["kind"]
        peer.last_seen = time.monotonic()
        if kind not in ("data", "chunk"):
            self.meter_in.add(kind, header_len)
        if kind in ("data", "chunk"):
            self._on_payload(peer, sock, header, more)
            return
        if more:
            raise ProtocolError(f"'{kind}' message must be a single frame")
        if kind == "ack":
            out = peer.unacked.pop(wire._int(header.get("seq"), "ack seq"), None)
            if out is not None:
                out.handle.acked.set()
        elif kind == "ping":
            self._control(peer, "pong")
        elif kind == "error":
            self._on_error(peer, header)
        elif kind == "bye":
            self._on_bye(peer, header)
        elif kind == "rekey":
            self._on_rekey(peer, header)

    def _on_payload(self, peer: Peer, sock: zmq.Socket, header: dict[str, Any], more: bool) -> None:
        if header["kind"] == "data":
            if peer.incoming is not None:
                raise ProtocolError("a new transfer started before the previous one finished")
            session, seq = header.get("session"), wire._int(header.get("seq"), "data header 'seq'")
            last = self._delivered.get(peer.pid)
            if last is not None and last[0] == session:
                gap = bool(header.get("rs")) and seq > last[1] + 1  # go-back-N: an earlier one is coming again
                if seq <= last[1] or gap:
                    if not gap:
                        self._control(peer, "ack", seq=seq)  # a duplicate (resend after reconnect): ack only
                    peer.discard_seq = seq
                    self._drain(sock, more)
                    return
            peer.discard_seq = None
            try:
                peer.incoming = Incoming(header, max_bytes=self.options.max_transfer_bytes, allocate=self._allocate)
            except _Busy as busy:  # backpressure, not misbehaviour: refuse this transfer only
                self._control(peer, "error", reason=str(busy), seq=seq, busy=True)
                peer.discard_seq = seq
                self._drain(sock, more)
                return
        else:
            if peer.discard_seq is not None and header.get("seq") == peer.discard_seq:
                self._drain(sock, more)
                return
            if peer.incoming is None or header.get("seq") != peer.incoming.header["seq"]:
                raise ProtocolError("chunk without a transfer in progress")
        inc = peer.incoming
        off = wire._int(header.get("off"), "chunk offset")
        n = wire._int(header.get("n"), "chunk size")
        got = 0
        while more:
            view = inc.view()[got:]
            size = sock.recv_into(view) if len(view) else len(sock.recv(copy=False))
            if size > len(view):
                raise ProtocolError(f"payload frame of {size} bytes overruns the transfer")
            got += size
            more = bool(sock.getsockopt(zmq.RCVMORE))
        inc.write(off, n, got)
        if inc.complete:
            peer.incoming = None
            self._inflight -= inc.total
            message = inc.message(peer.pid, release=self.buffers.give)
            self.meter_in.add(message.kind if len(self.meter_in.bytes) < 256 else "other", inc.total)
            self._delivered[peer.pid] = (message.session, message.seq)
            self._delivered.move_to_end(peer.pid)
            if len(self._delivered) > 4096:
                self._delivered.popitem(last=False)
            self._control(peer, "ack", seq=message.seq)
            self._deliver(message)

    def _drain(self, sock: zmq.Socket, more: bool) -> None:
        while more:
            sock.recv(copy=False)
            more = bool(sock.getsockopt(zmq.RCVMORE))

    def _on_error(self, peer: Peer, header: dict[str, Any]) -> None:
        reason = str(header.get("reason", ""))[:500]
        cls = AuthError if header.get("auth") else ProtocolError
        error = cls(f"{self.peer_label} {peer.pid} refused our message: {reason}", peer=peer.pid)
        out = peer.unacked.pop(header["seq"], None) if type(header.get("seq")) is int else None
        if out is not None:
            out.handle.fail(error)  # e.g. the receiver was busy: this transfer was not taken
        self._inbox.put(error)

    def _on_bye(self, peer: Peer, header: dict[str, Any]) -> None:
        self._drop_peer(peer, None)

    def _on_rekey(self, peer: Peer, header: dict[str, Any]) -> None:
        raise ProtocolError("unexpected rekey")

    # ---------- liveness ----------
    def _housekeeping(self, now: float, *, paused: bool = False) -> None:
        lease = self.options.lease_s
        for key, until in list(self._banned.items()):
            if now >= until:
                del self._banned[key]
        for peer in list(self._peers.values()):
            if peer.blocked_since is not None and now - peer.blocked_since > lease:
                self._drop_peer(
                    peer, PeerTimeout(f"{self.peer_label} {peer.pid} has not read for {lease} s", peer=peer.pid)
                )
                continue
            if peer.incoming is not None and now - peer.incoming.touched > lease:
                # most often a connection that died mid-transfer (a killed process): forget the
                # transfer and the peer, but do not ban its key, or its restarted process (same
                # key) would be ignored for ban_s
                self._refuse(peer, peer.route, ProtocolError(f"transfer stalled for {lease} s"), peer.sock, ban=False)
                continue
            if now - peer.last_seen > lease and not paused:
                self._drop_peer(
                    peer,
                    PeerTimeout(
                        f"{self.peer_label} {peer.pid} silent for {now - peer.last_seen:.1f} s (lease {lease} s)",
                        peer=peer.pid,
                    ),
                )
                continue
            if now - peer.last_sent > lease / 4 and not peer.outbox:
                self._control(peer, "ping")
            if self.options.resend_s > 0 and peer.unacked and not (peer.outbox and peer.outbox[0].next_index):
                oldest = peer.unacked[min(peer.unacked)]
                if now - oldest.last_sent > self.options.resend_s and oldest.sends < 5:
                    # go-back-N: every unacknowledged transfer again, in order, ahead of new ones
                    for seq in sorted(peer.unacked, reverse=True):
                        out = peer.unacked.pop(seq)
                        out.next_index, out.enqueued = 0, now
                        peer.outbox.appendleft(out)

    def _drop_peer(self, peer: Peer, error: Exception | None) -> None:
        self._peers.pop(peer.pid, None)
        self._abort_incoming(peer)
        failure = error or TransportError(f"{self.peer_label} {peer.pid} left")
        for out in [*peer.outbox, *peer.unacked.values()]:
            out.handle.fail(failure)
            if out not in self._sending:
                self._sending.append(out)  # "sent" only once libzmq released its frames
        if error is not None:
            self._inbox.put(error)

    def _abort_incoming(self, peer: Peer) -> None:
        """Forget a partly received transfer and recycle its buffer."""
        if peer.incoming is not None:
            self._inflight -= peer.incoming.total
            self.buffers.give(peer.incoming.buffer)
            peer.incoming = None

    def _refuse(
        self, peer: Peer | None, route: bytes | None, err: Exception, sock: zmq.Socket, *, ban: bool = True
    ) -> None:
        """A peer broke the protocol or auth: tell it (best effort), forget it, ignore it a while
        (``ban``: ``ban_s``)."""
        pid = peer.pid if peer else (route.hex() if route else "?")
        self.errors.append((pid, str(err)))
        frames = [
            wire.pack(
                {"v": wire.VERSION, "kind": "error", "reason": str(err)[:500], "auth": isinstance(err, AuthError)}
            ),
        ]
        try:
            sock.send_multipart([route, *frames] if route is not None else frames, flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        if peer is not None:
            self._drop_peer(peer, None)
        if ban and self.options.ban_s > 0:
            until = time.monotonic() + self.options.ban_s
            if route is not None:
                self._banned[route] = until
            if peer is not None and peer.key is not None:
                self._banned[peer.key] = until  # a new connection with the same key stays ignored


def _next_size(out: Outgoing) -> int:
    """Bytes of the next chunk ``out`` will send (what the link shaper paces)."""
    return sum(len(f) for f in out.messages[out.next_index])
