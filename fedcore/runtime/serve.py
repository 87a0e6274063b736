"""``fedcore serve X.toml`` (only the server, for clients on other hosts) and ``fedcore join X.toml``
(exactly one client). Same config file on every host; the server admits the client keys in an
allow-list directory (``fedcore keys allow``), each client proves its key and names its shard
with ``--index``."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from fedcore.algorithms import ProgressEvent, algorithm_of
from fedcore.algorithms.registry import Checkpoint
from fedcore.transport import Server, load_keypair, save_keypair

from .child import run_client
from .job import loss_progress, new_run_dir, prepare, progress_done, write_outputs, write_run_config
from .processes import absent_peers, await_hellos, transport_options
from .runner import _outcome, server_role


def serve(
    config: Any,
    *,
    bind: str | None = None,
    allow_dir: str | None = None,
    server_key: str | None = None,
    hello_timeout_s: float = 600.0,
    min_clients: int | None = None,
    console: Console | None = None,
    run_dir: Path | None = None,
    resume: Checkpoint | None = None,
) -> Path:
    """Bind at ``bind`` (default ``transport.bind``), print the address and the server's public key
    file, wait for the config's ``num_clients`` clients (or, with ``min_clients``, for at least
    that many once ``hello_timeout_s`` passed: the others are out of the run from its start, as
    dropped clients; one that connects later is not admitted), run the method's server, write the
    run's outputs; returns the run directory. ``server_key``: a ``.key_secret`` file (default: the
    keypair in ``<run_dir>/keys``, made on first use, so a resumed server keeps its key);
    ``allow_dir``: the client keys admitted (CURVE needs it). ``resume``: a checkpoint of
    ``run_dir`` to go on from (``resume_point``); clients join again as at the start."""
    console = console or Console()
    spec = algorithm_of(config)
    prepare(config, console)  # bad data or a missing checkpoint stops here, before binding
    if bind is not None:
        config = dataclasses.replace(config, transport=dataclasses.replace(config.transport, bind=bind))
    t = config.transport
    run_dir = run_dir or new_run_dir(config.output.dir)
    options = transport_options(t)
    if not t.curve:
        server = Server(t.bind, plaintext=True, options=options)
        public = None
    else:
        if allow_dir is None or not Path(allow_dir).is_dir():
            raise ValueError(
                f"--allow must be a directory of client keys (fedcore keys allow DIR NAME.key), got {allow_dir!r}"
            )
        if server_key is None and (run_dir / "keys" / "server.key_secret").is_file():
            secret = run_dir / "keys" / "server.key_secret"
            public = secret.with_suffix(".key")
        elif server_key is None:
            public, secret = save_keypair(run_dir / "keys", "server")
        else:
            secret = Path(server_key)
            public = secret.with_suffix(".key")
        server = Server(t.bind, keys=load_keypair(secret), allow=str(allow_dir), options=options)
    write_run_config(config, run_dir)
    try:
        console.print(f"[bold]fedcore serve[/] {spec.describe(config)}")
        if resume is not None:
            console.print(f"resuming {run_dir} after round {resume.round}")
        console.print(
            f"listening at {server.address}" + (f"; server public key {public}" if public else " (plaintext)")
        )
        least = "" if min_clients is None else f", at least {min_clients} after {hello_timeout_s:g} s"
        console.print(
            f"waiting for {config.num_clients} clients{least} (fedcore join ... --index 0..{config.num_clients - 1})"
        )
        peers = await_hellos(
            server, config.num_clients, timeout=hello_timeout_s, min_clients=min_clients, say=console.print
        )
        with loss_progress(console) as progress:
            done = progress_done(resume)
            task = progress.add_task("training", total=spec.total(config) or None, completed=done, loss=float("nan"))

            def on_progress(event: ProgressEvent) -> None:
                progress.update(task, advance=event.advance, loss=event.loss, description=event.label)

            t0 = time.perf_counter()
            role = server_role(spec, config, server, peers, on_progress, run_dir=run_dir, resume=resume)
            leave_out(role, absent_peers(peers), spec.name)
            result = role.run()
        server.flush(timeout=min(5.0, t.lease_s))  # the stop orders reach the clients before close
        outcome = _outcome(spec, config, result, server.stats(), "zmq+curve" if t.curve else "zmq", t0)
    finally:
        server.close()
    write_outputs(config, outcome, run_dir, console)
    return run_dir


def leave_out(role: Any, peers: list[str], name: str) -> None:
    """Take ``peers`` (clients that did not join) out of ``role``'s run before it starts, as
    dropped clients (its ``roster``: every registered method's server role has one)."""
    if not peers:
        return
    roster = getattr(role, "roster", None)
    if roster is None:
        raise ValueError(f"algorithm {name!r} has no roster of clients: it cannot start without all of them")
    for peer in peers:
        roster.drop(peer, "did not join before the run started")


def join(config: Any, *, server: str, server_key: str | None, key: str | None, index: int) -> int:
    """Run client ``index`` of ``config`` against ``server`` (``tcp://HOST:PORT``); ``key``: this
    client's keypair, ``NAME`` or ``NAME.key_secret`` (``fedcore keys new NAME``); ``server_key``:
    the server's public ``.key`` file. Returns the process exit code."""
    spec = algorithm_of(config)
    if not 0 <= index < config.num_clients:
        raise ValueError(f"--index must be in [0, {config.num_clients - 1}] for this config, got {index}")
    key_file = server_key_file = None
    if config.transport.curve:
        if key is None or server_key is None:
            raise ValueError("a CURVE run needs --key NAME (this client's keypair) and --server-key FILE")
        key_file = key if key.endswith(".key_secret") else f"{key}.key_secret"
        for path, what in ((key_file, "--key"), (server_key, "--server-key")):
            if not Path(path).is_file():
                raise ValueError(f"{what}: {path!r} does not exist (make keys with 'fedcore keys new NAME')")
        server_key_file = server_key
    return run_client(spec.config_to_dict(config), index, server, key_file, server_key_file)
