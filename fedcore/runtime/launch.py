"""Run split fine-tuning as real processes: this process serves the body over a CURVE-secured
``fedcore.transport.Server`` on loopback; each client is a spawned process with its own keypair.

Keys are generated for the run (``<run_dir>/keys``: the server's and each client's certificate
pair, secrets mode 0600) and the server admits exactly the run's client keys.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedcore.accounting import merge_counts
from fedcore.algorithms.split.client_role import SplitClientRole
from fedcore.algorithms.split.inprocess import SplitRunResult
from fedcore.algorithms.split.modes import make_server_role
from fedcore.algorithms.split.server_role import StepReport
from fedcore.algorithms.split.setup import (
    build_client_data,
    build_split,
    client_parts,
    endless_batches,
    wire_codecs,
)
from fedcore.data import CharTokenizer
from fedcore.transport import Client, EndpointOptions, LinkShape, PeerTimeout, Server, load_keypair, save_keypair

from .config import RunConfig, TransportConfig, config_from_dict, config_to_dict


def transport_options(t: TransportConfig) -> EndpointOptions:
    """Endpoint options of a run: its lease and its link shape (the same in both directions)."""
    return EndpointOptions(
        lease_s=t.lease_s,
        chunk_bytes=t.chunk_kib * 1024,
        link=LinkShape(mbps=t.mbps or None, latency_ms=t.latency_ms, burst_bytes=t.burst_kib * 1024),
    )


def open_server(t: TransportConfig, clients: int, keys_dir: Path) -> tuple[Server, list[tuple[str | None, str | None]]]:
    """A loopback server for ``clients`` client processes and, per client, the (secret key file,
    server public key file) to hand it: CURVE keys generated for the run in ``keys_dir`` (the
    server admits exactly those clients), or (None, None) each on a plaintext link."""
    if not t.curve:
        return Server("tcp://127.0.0.1:0", plaintext=True, options=transport_options(t)), [(None, None)] * clients
    server_pub, server_secret = save_keypair(keys_dir, "server")
    client_files = [save_keypair(keys_dir, f"client-{k}") for k in range(clients)]
    server = Server(
        "tcp://127.0.0.1:0",
        keys=load_keypair(server_secret),
        allow=[load_keypair(pub).public for pub, _ in client_files],
        options=transport_options(t),
    )
    return server, [(str(secret), str(server_pub)) for _, secret in client_files]


def connect_client(t: TransportConfig, address: str, key_file: str | None, server_key_file: str | None) -> Client:
    """A client process's link to the server (CURVE when it was given key files)."""
    if key_file is None:
        return Client(address, plaintext=True, options=transport_options(t))
    assert server_key_file is not None
    return Client(
        address,
        keys=load_keypair(key_file),
        server_key=load_keypair(server_key_file).public,
        options=transport_options(t),
    )


def client_main(
    config_dict: dict[str, Any], index: int, address: str, key_file: str | None, server_key_file: str | None
) -> None:
    """Entry point of one client process (spawned): build its parts, connect, obey the server."""
    config = config_from_dict(config_dict)
    tokenizer = CharTokenizer()
    data = build_client_data(config, tokenizer)[index]
    parts = client_parts(config, build_split(config, tokenizer), index)
    link = connect_client(config.transport, address, key_file, server_key_file)
    try:
        link.send({}, {"op": "hello", "client": index}, tag="control")
        codecs, noise_std = wire_codecs(config, index)
        SplitClientRole(
            link,
            parts,
            endless_batches(data, config, index, tokenizer.pad_id),
            data.eval_batches,
            noise_std=noise_std,
            noise_relative=config.noise.relative,
            codecs=codecs,
            micro_batches=config.split.micro_batches,
        ).run()
    finally:
        link.close()


def run_split_processes(
    config: RunConfig,
    *,
    on_step: Callable[[StepReport], None] | None = None,
    keys_dir: Path | None = None,
    on_spawn: Callable[[list[subprocess.Popen]], None] | None = None,
    on_server: Callable[[str], None] | None = None,
) -> SplitRunResult:
    """Run ``config`` with the server here and ``train.clients`` client processes.

    ``on_spawn`` gets the client processes once started (e.g. to kill one and watch the run go
    on: a client silent for ``transport.lease_s`` is dropped; ``extra["dropped"]`` says who and why);
    ``on_server`` gets the server's address (e.g. to start a killed client again with its key files
    in ``keys_dir``: it rejoins at the next round; ``extra["rejoined"]`` says who and when)."""
    t0 = time.perf_counter()
    tokenizer = CharTokenizer()
    data = build_client_data(config, tokenizer)
    sm = build_split(config, tokenizer)
    n = config.train.clients
    tmp = None
    if keys_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="fedcore-keys-")
        keys_dir = Path(tmp.name)
    server, key_args = open_server(config.transport, n, keys_dir)
    if on_server is not None:
        on_server(server.address)
    procs = [spawn_client(config_to_dict(config), k, server.address, *key_args[k]) for k in range(n)]
    if on_spawn is not None:
        on_spawn(procs)
    try:
        peers = await_hellos(server, procs)
        role = make_server_role(config, server, sm, peers, [len(d.train) for d in data], on_step=on_step)
        result = role.run(
            rounds=config.train.rounds, local_steps=config.train.local_steps, avg_period=config.split.avg_period
        )
        for p in procs:
            p.wait(timeout=30)
        stats = server.stats()
        dropped = {peers.index(p): why for p, why in role.dropped.items()}
        rejoined = {peers.index(p): rnd for p, rnd in role.rejoined.items()}
    finally:
        kill_leftovers(procs)
        server.close()
        if tmp is not None:
            tmp.cleanup()
    return SplitRunResult(
        eval_start=result.eval_start,
        eval_end=result.eval_end,
        steps=result.reports,
        wire_bytes=merge_counts(stats["received"], stats["sent"]),
        wire_messages=merge_counts(stats["received_messages"], stats["sent_messages"]),
        wall_seconds=time.perf_counter() - t0,
        client_sizes=[len(d.train) for d in data],
        extra={
            "skills": [d.skills for d in data],
            "transport": "zmq+curve" if config.transport.curve else "zmq",
            "dropped": dropped,
            "rejoined": rejoined,
            "train_seconds": result.train_seconds,
        },
    )


def kill_leftovers(procs: list[subprocess.Popen]) -> None:
    """Kill the client processes still running when a run ends or fails (each is waited for)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def spawn_client(
    config: dict[str, Any],
    index: int,
    address: str,
    key_file: str | None,
    server_key_file: str | None,
    *,
    entry: str = "split",
) -> subprocess.Popen:
    """A fresh interpreter (no forked torch or zmq state) running the ``entry`` job's client
    (``split``: ``client_main``; ``bcd``, ``fibecfed``: their launchers' ``client_main``); the config goes through
    stdin. PYTHONSAFEPATH keeps a checkout's kernels/ off the child's sys.path."""
    args = {
        "entry": entry,
        "config": config,
        "index": index,
        "address": address,
        "key_file": key_file,
        "server_key_file": server_key_file,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedcore.runtime.launch"],
        stdin=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONSAFEPATH="1"),
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(args))
    proc.stdin.close()
    return proc


def await_hellos(server: Server, procs: list, timeout: float = 180.0) -> list[str]:
    """Peer ids of the client processes, in client order, once each said hello."""
    peers: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    while len(peers) < len(procs):
        dead = [k for k, p in enumerate(procs) if p.poll() is not None]
        if dead:
            raise RuntimeError(f"client process(es) {dead} exited before connecting (their stderr is above)")
        if time.monotonic() > deadline:
            raise PeerTimeout(f"only {len(peers)} of {len(procs)} clients connected within {timeout} s")
        try:
            msg = server.recv(timeout=1.0)
        except PeerTimeout:
            continue
        if msg.meta.get("op") != "hello":
            raise RuntimeError(f"expected hello, got {msg.meta.get('op')!r}")
        peers[int(msg.meta["client"])] = msg.peer
    return [peers[k] for k in range(len(procs))]


if __name__ == "__main__":  # a client process started by spawn_client
    _args = json.loads(sys.stdin.read())
    _entry = _args.get("entry", "split")
    if _entry == "bcd":
        from .launch_bcd import client_main as _main
    elif _entry == "fibecfed":
        from .launch_fibecfed import client_main as _main
    else:
        _main = client_main
    _main(_args["config"], _args["index"], _args["address"], _args["key_file"], _args["server_key_file"])
