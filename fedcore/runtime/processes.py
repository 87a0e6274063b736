"""Server and client endpoints of a run across processes: CURVE keys for a run, the loopback (or
``--bind``) server, a client's connection, spawning client processes, and waiting for their hellos.

Keys generated for a run (``<run_dir>/keys``: the server's and each client's certificate pair,
secrets mode 0600) make the server admit exactly the run's client keys.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedcore.config import TransportConfig
from fedcore.transport import Client, EndpointOptions, LinkShape, PeerTimeout, Server, load_keypair, save_keypair


def transport_options(t: TransportConfig) -> EndpointOptions:
    """Endpoint options of a run: its lease and its link shape (the same in both directions)."""
    return EndpointOptions(
        lease_s=t.lease_s,
        chunk_bytes=t.chunk_kib * 1024,
        link=LinkShape(mbps=t.mbps or None, latency_ms=t.latency_ms, burst_bytes=t.burst_kib * 1024),
    )


def open_server(t: TransportConfig, clients: int, keys_dir: Path) -> tuple[Server, list[tuple[str | None, str | None]]]:
    """A server at ``t.bind`` for ``clients`` client processes and, per client, the (secret key
    file, server public key file) to hand it: CURVE keys generated for the run in ``keys_dir`` (the
    server admits exactly those clients), or (None, None) each on a plaintext link."""
    if not t.curve:
        return Server(t.bind, plaintext=True, options=transport_options(t)), [(None, None)] * clients
    server_pub, server_secret = save_keypair(keys_dir, "server")
    client_files = [save_keypair(keys_dir, f"client-{k}") for k in range(clients)]
    server = Server(
        t.bind,
        keys=load_keypair(server_secret),
        allow=[load_keypair(pub).public for pub, _ in client_files],
        options=transport_options(t),
    )
    return server, [(str(secret), str(server_pub)) for _, secret in client_files]


def connect_client(t: TransportConfig, address: str, key_file: str | None, server_key_file: str | None) -> Client:
    """A client's link to the server at ``address`` (CURVE when it was given key files)."""
    if key_file is None:
        return Client(address, plaintext=True, options=transport_options(t))
    assert server_key_file is not None
    return Client(
        address,
        keys=load_keypair(key_file),
        server_key=load_keypair(server_key_file).public,
        options=transport_options(t),
    )


def spawn_client(
    config: dict[str, Any], index: int, address: str, key_file: str | None, server_key_file: str | None
) -> subprocess.Popen:
    """A fresh interpreter (no forked torch or zmq state) running client ``index`` of the config's
    algorithm (``fedcore.runtime.child``); the config (``AlgorithmSpec.config_to_dict``) goes
    through stdin. PYTHONSAFEPATH keeps a checkout's kernels/ off the child's sys.path."""
    args = {
        "plugin": _plugin_of(str(config.get("algorithm", "split"))),
        "config": config,
        "index": index,
        "address": address,
        "key_file": key_file,
        "server_key_file": server_key_file,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedcore.runtime.child"],
        stdin=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONSAFEPATH="1"),
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(args))
    proc.stdin.close()
    return proc


def _plugin_of(algorithm: str) -> tuple[str, str] | None:
    """(module name, file) of a method registered outside fedcore, which a fresh client process
    must import to find it in the registry; None for the built-in ones."""
    from fedcore.algorithms import get_algorithm

    module = get_algorithm(algorithm).client.__module__
    if module.split(".")[0] == "fedcore":
        return None
    return module, str(sys.modules[module].__file__)


def load_plugin(plugin: tuple[str, str] | list[str] | None) -> None:
    """Import a method's module from its file (it registers itself), unless already imported."""
    if not plugin:
        return
    import importlib.util

    name, path = plugin
    if name in sys.modules:
        return
    found = importlib.util.spec_from_file_location(name, path)
    if found is None or found.loader is None:
        raise ValueError(f"cannot import the algorithm's module {name!r} from {path!r}")
    module = importlib.util.module_from_spec(found)
    sys.modules[name] = module
    found.loader.exec_module(module)


def await_hellos(
    server: Server,
    clients: int,
    *,
    procs: list[subprocess.Popen] | None = None,
    timeout: float = 180.0,
    min_clients: int | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> list[str]:
    """Peer ids of ``clients`` clients, in client order, once each said hello (``meta["client"]``:
    its index). A hello with an index out of range or already taken is refused (logged, ignored).
    ``min_clients``: when ``timeout`` passes with at least that many connected, go on without the
    others; their places hold ``absent_peer(k)`` ids (``absent_peers`` lists them). ``procs``: the
    local client processes, whose early exit fails the wait at once; ``say`` gets a line per event
    (``fedcore serve`` prints them)."""
    if min_clients is not None and not 1 <= min_clients <= clients:
        raise ValueError(f"--min-clients must be in [1, {clients}] for this config, got {min_clients}")
    peers: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    while len(peers) < clients:
        dead = [k for k, p in enumerate(procs or []) if p.poll() is not None]
        if dead:
            raise RuntimeError(f"client process(es) {dead} exited before connecting (their stderr is above)")
        if time.monotonic() > deadline:
            if min_clients is not None and len(peers) >= min_clients:
                missing = [k for k in range(clients) if k not in peers]
                say(f"starting with {len(peers)} of {clients} clients; not joined: {missing}")
                return [peers.get(k, absent_peer(k)) for k in range(clients)]
            need = f"{clients}" if min_clients is None else f"{min_clients} (--min-clients) of {clients}"
            raise PeerTimeout(f"only {len(peers)} clients connected within {timeout} s; the run needs {need}")
        try:
            msg = server.recv(timeout=1.0)
        except PeerTimeout:
            continue
        index = msg.meta.get("client")
        if msg.meta.get("op") != "hello" or not isinstance(index, int) or not 0 <= index < clients:
            say(f"ignored {msg.meta.get('op')!r} (client {index!r}) from {msg.peer[:12]} while waiting")
        elif index in peers and peers[index] != msg.peer:
            say(f"refused a second client {index} (another key holds that index)")
        else:
            peers[index] = msg.peer
            say(f"client {index} connected ({len(peers)}/{clients})")
        msg.release()
    return [peers[k] for k in range(clients)]


ABSENT = "absent:"  # the peer-id prefix of a client that did not join before the run started


def absent_peer(index: int) -> str:
    """The placeholder peer id of client ``index`` when it did not join (no real peer has it)."""
    return f"{ABSENT}{index}"


def absent_peers(peers: list[str]) -> list[str]:
    """The placeholders among ``peers`` (``await_hellos`` with ``min_clients``)."""
    return [p for p in peers if p.startswith(ABSENT)]


def kill_leftovers(procs: list[subprocess.Popen]) -> None:
    """Kill the client processes still running when a run ends or fails (each is waited for)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)
