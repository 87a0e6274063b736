"""Serve a method's roles as threads of this process over an ``InProcessHub``: the server role in
the calling thread, each client role in a thread of its own (same messages and byte accounting as
over sockets). ``fedcore.runtime.run_threads`` builds the roles from the registry and calls this;
it is the one in-process runner."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from fedcore.transport import InProcessHub, PeerTimeout, TransportError

from .registry import Role

log = logging.getLogger("fedcore.algorithms")


def serve_in_threads(
    make_server: Callable[[Any, list[str]], Role],
    make_clients: list[Callable[[Any], Role]],
    *,
    join_s: float = 60.0,
) -> tuple[Any, dict[str, Any], list[BaseException]]:
    """Run ``make_server(link, peers).run()`` here and ``make_clients[i](link).run()`` in thread i.

    Client i's peer id is ``client-i``. A client thread that raises is reported to the server
    link as that peer's loss (``PeerTimeout``), so the server drops it at once and the run goes
    on, as when a client process dies; the error is logged and returned. If the server fails, every
    client is told to stop before the error propagates. Returns (the server's result, the server
    link's ``stats()``, the client errors)."""
    hub = InProcessHub()
    server_link = hub.server()
    peers = [f"client-{i}" for i in range(len(make_clients))]
    roles = [make(hub.endpoint(peer)) for make, peer in zip(make_clients, peers, strict=True)]
    errors: list[BaseException] = []

    def guarded(role: Role, peer: str) -> None:
        try:
            role.run()
        except BaseException as exc:  # a client thread must not fail silently
            log.error("%s failed; it leaves the run", peer, exc_info=exc)
            errors.append(exc)
            server_link.report(PeerTimeout(f"client thread failed: {exc!r}", peer=peer))

    threads = [
        threading.Thread(target=guarded, args=(r, p), daemon=True, name=f"fedcore-{p}")
        for r, p in zip(roles, peers, strict=True)
    ]
    for th in threads:
        th.start()
    try:
        result = make_server(server_link, peers).run()
    except BaseException:
        for peer in peers:  # unblock the client threads
            try:
                server_link.send_to(peer, {}, {"op": "stop"}, tag="control")
            except TransportError:
                pass
        raise
    finally:
        for th in threads:
            th.join(timeout=join_s if not errors else 1.0)
    return result, server_link.stats(), errors
