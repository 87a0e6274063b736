"""Client: a DEALER socket (connect) talking to one Server; CURVE by default."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import torch
import zmq
from zmq.utils.monitor import recv_monitor_message

from fedcore.codec import Codec

from . import wire
from .endpoint import Endpoint, Peer
from .errors import AuthError, ProtocolError
from .keys import Keypair
from .messages import SERVER, EndpointOptions, SendHandle
from .pacer import TokenBucket
from .security import require_secure_or_local


class Client(Endpoint):
    """Connect to a Server at ``connect``.

    keys: this client's CURVE keypair (with secret); server_key: the server's public key (z85).
    plaintext=True (no keys) only on loopback or ipc. The server must list this client's public
    key in its allow-list. A key rotation announced by the server is followed automatically.
    """

    peer_label = "server"

    def __init__(
        self,
        connect: str,
        *,
        keys: Keypair | None = None,
        server_key: bytes | None = None,
        plaintext: bool = False,
        options: EndpointOptions | None = None,
    ):
        require_secure_or_local(connect, plaintext)
        if not plaintext and (keys is None or keys.secret is None or server_key is None):
            raise ValueError(
                "a CURVE client needs keys=Keypair(public, secret) and server_key; or plaintext=True on loopback"
            )
        super().__init__(options)
        self.keys, self.plaintext = keys, plaintext
        self._socks: list[zmq.Socket] = []
        self._monitors: list[zmq.Socket] = []
        self._retiring: list[tuple[zmq.Socket, float]] = []
        sock = self._open(connect, server_key)
        self._peers[SERVER] = Peer(SERVER, sock, None, TokenBucket(self.options.link))
        self._start()

    def _open(self, connect: str, server_key: bytes | None) -> zmq.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        self._tune(sock)
        sock.setsockopt(zmq.ROUTING_ID, os.urandom(16))
        if not self.plaintext:
            assert self.keys is not None and self.keys.secret is not None
            sock.curve_secretkey = self.keys.secret
            sock.curve_publickey = self.keys.public
            sock.curve_serverkey = server_key
        # handshake failures (e.g. our key is not on the server's allow-list) surface as AuthError
        self._monitors.append(
            sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
        )
        sock.connect(connect)
        self._socks.append(sock)
        return sock

    def send(
        self,
        tensors: Mapping[str, torch.Tensor],
        meta: dict[str, Any] | None = None,
        *,
        step: int = 0,
        codec: str | Codec = "raw",
        tag: str = "data",
    ) -> SendHandle:
        """Queue named tensors (+ small meta) for the server; returns at once with a handle."""
        return self._submit(SERVER, tensors, meta, step=step, codec=codec, tag=tag)

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
        """The Link interface: a client's only peer is the server."""
        if peer != SERVER:
            raise ValueError(f"a Client sends only to {SERVER!r}, not {peer!r}")
        return self.send(tensors, meta, step=step, codec=codec, tag=tag)

    # ---------- I/O thread ----------
    def _sockets(self) -> list[zmq.Socket]:
        return self._socks + self._monitors

    def _read_message(self, sock: zmq.Socket) -> None:
        if sock in self._monitors:
            event = recv_monitor_message(sock, zmq.NOBLOCK)
            what = "rejected our key" if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH else "failed the handshake"
            self._inbox.put(
                AuthError(
                    f"server {what} (is this client's public key on its allow-list, and the server key right?)",
                    peer=SERVER,
                )
            )
            return
        self._read_data(sock)

    def _route_for(self, peer_id: str | None) -> Peer | None:
        peer = self._peers.get(SERVER)
        if peer is None:  # the lease ran out earlier; ZeroMQ keeps reconnecting, so try again
            peer = Peer(SERVER, self._socks[-1], None, TokenBucket(self.options.link))
            self._peers[SERVER] = peer
        return peer

    def _read_data(self, sock: zmq.Socket) -> None:
        head = sock.recv(zmq.NOBLOCK, copy=False)
        more = bool(sock.getsockopt(zmq.RCVMORE))
        peer = self._route_for(SERVER)
        assert peer is not None
        try:
            self._on_frames(peer, sock, wire.unpack(head.buffer), more, len(head))
        except (ProtocolError, ValueError, TypeError, RuntimeError, KeyError) as err:
            err = err if isinstance(err, ProtocolError) else ProtocolError(f"unprocessable: {err}")
            self._abort_incoming(peer)
            self._drain(sock, bool(sock.getsockopt(zmq.RCVMORE)))
            self.errors.append((SERVER, str(err)))
            self._inbox.put(err)

    def _on_rekey(self, peer: Peer, header: dict[str, Any]) -> None:
        address, key = header.get("address"), header.get("server_key")
        overlap = header.get("overlap_s", 0)
        if not isinstance(address, str) or not isinstance(key, str) or len(key) != 40:
            raise ProtocolError("rekey needs an address and a 40-char z85 server key")
        old = peer.sock
        peer.next_sock = self._open(address, key.encode())  # used from the next transfer boundary on
        self._retiring.append((old, time.monotonic() + max(0.0, float(overlap))))

    def _periodic(self, now: float) -> None:
        for sock, deadline in list(self._retiring):
            if now >= deadline:
                self._retiring.remove((sock, deadline))
                index = self._socks.index(sock)
                self._socks.pop(index)
                monitor = self._monitors.pop(index)
                sock.disable_monitor()
                monitor.close(linger=0)
                sock.close(linger=0)
