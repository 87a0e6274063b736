"""Server: a ROUTER socket (bind) serving many clients; CURVE with an allow-list by default."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import zmq

from fedcore.codec import Codec

from . import wire
from .endpoint import Endpoint, Peer
from .errors import AuthError, ProtocolError, TransportError
from .keys import AllowList, Keypair
from .messages import EndpointOptions, SendHandle
from .pacer import TokenBucket
from .security import require_secure_or_local, start_authenticator

ALLOW_REFRESH_S = 0.2  # how often the allow-list directory is re-read (revocation latency)


class Server(Endpoint):
    """Serve clients on ``bind`` (e.g. ``tcp://127.0.0.1:0`` picks a free port; see ``address``).

    keys: the server's CURVE keypair (with secret). allow: the client public keys admitted, as an
    ``AllowList``, a list of z85 keys, or a directory of ``.key`` files (re-read when it changes).
    plaintext=True (no keys) only on loopback or ipc. ``recv`` yields messages from every client;
    ``send(peer, ...)`` answers one. A client that breaks the protocol gets an error reply and is
    dropped and ignored for ``options.ban_s``; the others are served on.
    """

    peer_label = "client"

    def __init__(
        self,
        bind: str,
        *,
        keys: Keypair | None = None,
        allow: AllowList | list[bytes] | str | Path | None = None,
        plaintext: bool = False,
        options: EndpointOptions | None = None,
    ):
        require_secure_or_local(bind, plaintext)
        if not plaintext and (keys is None or keys.secret is None):
            raise ValueError("a CURVE server needs keys=Keypair(public, secret); or plaintext=True on loopback")
        if plaintext and keys is not None:
            raise ValueError("pass keys or plaintext=True, not both")
        if not plaintext and allow is None:
            raise ValueError("a CURVE server needs allow= (client public keys, or a directory of .key files)")
        super().__init__(options)
        self.plaintext = plaintext
        if isinstance(allow, AllowList) or allow is None:
            self.allowed = allow or AllowList()
        elif isinstance(allow, (str, Path)):
            self.allowed = AllowList(directory=allow)
        else:
            self.allowed = AllowList(keys=list(allow))
        self._auth = None if plaintext else start_authenticator(self.ctx, self.allowed)
        self.keys = keys
        self._socks: list[zmq.Socket] = []
        self._retiring: list[tuple[zmq.Socket, float]] = []
        self._last_refresh = 0.0
        self.address = self._open(bind, keys)
        self._start()

    def _open(self, bind: str, keys: Keypair | None) -> str:
        sock = self.ctx.socket(zmq.ROUTER)
        self._tune(sock)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unroutable sends raise instead of vanishing
        if keys is not None:
            sock.curve_server = True
            sock.curve_secretkey = keys.secret
            sock.curve_publickey = keys.public
        sock.bind(bind)
        self._socks.append(sock)
        return sock.getsockopt_string(zmq.LAST_ENDPOINT)

    # ---------- user API ----------
    def send(
        self,
        peer: str,
        tensors: Mapping[str, torch.Tensor],
        meta: dict[str, Any] | None = None,
        *,
        step: int = 0,
        codec: str | Codec = "raw",
        tag: str = "data",
    ) -> SendHandle:
        """Queue named tensors (+ small meta) for client ``peer``; returns at once with a handle."""
        if not isinstance(peer, str):
            raise ValueError(f"Server.send needs a client's peer id (Message.peer), got {peer!r}")
        return self._submit(peer, tensors, meta, step=step, codec=codec, tag=tag)

    send_to = send  # the Link interface name

    @property
    def peers(self) -> list[str]:
        """Ids of the clients heard from within their lease."""
        return list(self._peers)

    def rotate_keys(
        self,
        new_keys: Keypair,
        bind: str,
        *,
        overlap_s: float = 30.0,
        advertise: str | None = None,
        timeout: float = 10.0,
    ) -> str:
        """Start serving with ``new_keys`` on ``bind``; old and new keys both work for
        ``overlap_s`` seconds, then the old socket closes. Connected clients are told (over the
        authenticated old channel) to move. Returns the new address."""
        if new_keys.secret is None or self.plaintext:
            raise ValueError("rotation needs a CURVE server and a new keypair with its secret")
        done = threading.Event()
        result: dict[str, Any] = {}
        self._commands.put(("rotate", (new_keys, bind, overlap_s, advertise, done, result), None))
        self._wake()
        if not done.wait(timeout):
            raise TransportError("key rotation did not complete")
        if "error" in result:
            raise result["error"]
        return result["address"]

    def _before_term(self) -> None:
        if self._auth is not None:
            self._auth.stop()

    # ---------- I/O thread ----------
    def _sockets(self) -> list[zmq.Socket]:
        return self._socks

    def _handle_command(self, command: tuple) -> None:
        if command[0] != "rotate":
            super()._handle_command(command)
            return
        new_keys, bind, overlap_s, advertise, done, result = command[1]
        try:
            old = self._socks[-1]
            bound = self._open(bind, new_keys)
            address = advertise or bound  # advertise: the name clients reach the new socket by
            self.keys = new_keys
            self._retiring.append((old, time.monotonic() + overlap_s))
            for peer in self._peers.values():
                self._control(peer, "rekey", address=address, server_key=new_keys.public.decode(), overlap_s=overlap_s)
            result["address"] = address
        except (zmq.ZMQError, ValueError) as err:
            result["error"] = err
        done.set()

    def _periodic(self, now: float) -> None:
        if now - self._last_refresh > ALLOW_REFRESH_S:
            self.allowed.refresh()
            self._last_refresh = now
            if not self.plaintext:  # revocation also stops what we would send to that client
                for peer in list(self._peers.values()):
                    if peer.pid not in self.allowed:
                        self._refuse(
                            peer,
                            peer.route,
                            AuthError("client key is no longer allowed (revoked)", peer=peer.pid),
                            peer.sock,
                        )
        for sock, deadline in list(self._retiring):
            if now >= deadline:
                self._retiring.remove((sock, deadline))
                self._socks.remove(sock)
                sock.close(linger=0)
                for peer in list(self._peers.values()):
                    if peer.sock is sock:
                        self._drop_peer(peer, None)

    def _on_error(self, peer: Peer, header: dict[str, Any]) -> None:
        # a client's complaint is recorded, never raised: one client must not disrupt the server's loop
        self.errors.append((peer.pid, f"client reported: {str(header.get('reason', ''))[:200]}"))

    def _route_for(self, peer_id: str | None) -> Peer | None:
        if peer_id is None:
            raise ValueError("Server.send needs the peer id of a client (Message.peer)")
        return self._peers.get(peer_id)

    def _read_message(self, sock: zmq.Socket) -> None:
        route = sock.recv(zmq.NOBLOCK)
        if not sock.getsockopt(zmq.RCVMORE):
            return  # an identity with nothing after it: nothing to answer
        head = sock.recv(copy=False)
        more = bool(sock.getsockopt(zmq.RCVMORE))
        if route in self._banned:
            self._drain(sock, more)  # expired bans are purged by the I/O loop's housekeeping
            return
        peer = None
        try:
            if self.plaintext:
                pid = route.hex()
            else:
                pid = str(head.get("User-Id"))  # the key CURVE authenticated for this connection
                if pid in self._banned:
                    self._drain(sock, more)
                    return
                if pid not in self.allowed:
                    raise AuthError(f"client key {pid} is not (or no longer) allowed", peer=pid)
            peer = self._peers.get(pid)
            if peer is None:
                peer = Peer(pid, sock, route, TokenBucket(self.options.link), key=pid)
                self._peers[pid] = peer
            peer.sock, peer.route = sock, route  # a reconnect or key rotation moves the peer
            self._on_frames(peer, sock, wire.unpack(head.buffer), more, len(head))
        except (ProtocolError, AuthError) as err:
            self._drain(sock, bool(sock.getsockopt(zmq.RCVMORE)))
            self._refuse(peer, route, err, sock)
        except (ValueError, TypeError, RuntimeError, KeyError) as err:  # input no validator foresaw
            self._drain(sock, bool(sock.getsockopt(zmq.RCVMORE)))
            self._refuse(peer, route, ProtocolError(f"unprocessable message: {type(err).__name__}: {err}"), sock)
