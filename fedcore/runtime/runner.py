"""The two runners of every registered method: threads of this process (``run_threads``) and a
server here with one spawned process per client over CURVE on loopback (``run_processes``). Both
build the roles through the registry, so the same config gives the same numbers on either.

Checkpoints: given a ``run_dir`` (and ``output.checkpoint`` on), the runners build and save every
``ProgressEvent.checkpoint`` the server role offers to ``<run_dir>/checkpoint/`` before passing the
event on (without a ``run_dir``, none is built); given ``resume`` (a loaded ``Checkpoint``), they
restore the server role from it first."""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedcore.algorithms import AlgorithmSpec, ProgressEvent, RunReport, algorithm_of
from fedcore.algorithms.registry import Checkpoint, Progress, Role
from fedcore.algorithms.threads import serve_in_threads

from .checkpoint import save_checkpoint
from .processes import await_hellos, kill_leftovers, open_server, spawn_client


@dataclass
class RunOutcome:
    """A finished run: the method's own ``result``, its method-independent ``report``, the server
    link's byte counts (``wire``), how it ran (``transport``), and its wall time in seconds."""

    algorithm: str
    result: Any
    report: RunReport
    wire: dict[str, Any]
    transport: str
    wall_seconds: float
    client_errors: list[BaseException] = field(default_factory=list)


def run(
    config: Any,
    *,
    on_progress: Progress | None = None,
    keys_dir: Path | None = None,
    run_dir: Path | None = None,
    resume: Checkpoint | None = None,
) -> RunOutcome:
    """Run ``config`` as its ``transport.kind`` says: ``zmq`` -> processes, ``inprocess`` -> threads."""
    if config.transport.kind == "zmq":
        return run_processes(config, on_progress=on_progress, keys_dir=keys_dir, run_dir=run_dir, resume=resume)
    return run_threads(config, on_progress=on_progress, run_dir=run_dir, resume=resume)


def run_threads(
    config: Any,
    *,
    on_progress: Progress | None = None,
    run_dir: Path | None = None,
    resume: Checkpoint | None = None,
) -> RunOutcome:
    """The server role here and each client role in a thread, over an ``InProcessHub``."""
    spec = algorithm_of(config)
    t0 = time.perf_counter()
    result, wire, errors = serve_in_threads(
        lambda link, peers: server_role(spec, config, link, peers, on_progress, run_dir=run_dir, resume=resume),
        [_client_of(spec, config, i) for i in range(config.num_clients)],
    )
    return _outcome(spec, config, result, wire, "inprocess", t0, errors)


def server_role(
    spec: AlgorithmSpec,
    config: Any,
    link: Any,
    peers: list[str],
    on_progress: Progress | None,
    *,
    run_dir: Path | None = None,
    resume: Checkpoint | None = None,
) -> Role:
    """``spec``'s server role, saving its checkpoints in ``run_dir`` (when given and
    ``output.checkpoint`` is on) and restored from ``resume`` (``ValueError`` if ``spec`` is not
    resumable or the checkpoint does not fit)."""
    progress = on_progress
    if run_dir is not None and config.output.checkpoint and spec.resumable:
        where = Path(run_dir)

        def progress(event: ProgressEvent) -> None:
            if event.checkpoint is not None:
                save_checkpoint(where, event.checkpoint())
            if on_progress is not None:
                on_progress(event)

    role = spec.server(config, link, peers, progress)
    if resume is not None:
        restore = getattr(role, "restore", None)
        if not spec.resumable or restore is None:
            raise ValueError(f"algorithm {spec.name!r} does not support resume")
        restore(resume)
    return role


def _client_of(spec: AlgorithmSpec, config: Any, index: int) -> Callable[[Any], Any]:
    return lambda link: spec.client(config, link, index)


def run_processes(
    config: Any,
    *,
    on_progress: Progress | None = None,
    keys_dir: Path | None = None,
    run_dir: Path | None = None,
    resume: Checkpoint | None = None,
    on_spawn: Callable[[list[subprocess.Popen]], None] | None = None,
    on_server: Callable[[str], None] | None = None,
) -> RunOutcome:
    """The server role here and ``config.num_clients`` client processes at ``transport.bind``.

    Keys are generated into ``keys_dir`` (a temporary directory by default). ``on_spawn`` gets
    the client processes once started (e.g. to kill one and watch the run go on: a client silent
    for ``transport.lease_s`` is dropped); ``on_server`` the server's address (e.g. to start a
    killed client again with its key files in ``keys_dir``; split clients rejoin)."""
    spec = algorithm_of(config)
    t0 = time.perf_counter()
    n = config.num_clients
    tmp = None
    if keys_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="fedcore-keys-")
        keys_dir = Path(tmp.name)
    server, key_args = open_server(config.transport, n, keys_dir)
    if on_server is not None:
        on_server(server.address)
    as_dict = spec.config_to_dict(config)
    procs = [spawn_client(as_dict, k, server.address, *key_args[k]) for k in range(n)]
    if on_spawn is not None:
        on_spawn(procs)
    try:
        peers = await_hellos(server, n, procs=procs)
        role = server_role(spec, config, server, peers, on_progress, run_dir=run_dir, resume=resume)
        result = role.run()
        for p in procs:  # the server told every client still in the run to stop
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass  # killed below
        wire = server.stats()
    finally:
        kill_leftovers(procs)
        server.close()
        if tmp is not None:
            tmp.cleanup()
    return _outcome(spec, config, result, wire, "zmq+curve" if config.transport.curve else "zmq", t0)


def _outcome(
    spec: AlgorithmSpec,
    config: Any,
    result: Any,
    wire: dict[str, Any],
    transport: str,
    t0: float,
    errors: list[BaseException] | None = None,
) -> RunOutcome:
    report = spec.report(config, result, wire)
    report.summary.setdefault("transport", transport)
    return RunOutcome(spec.name, result, report, wire, transport, time.perf_counter() - t0, list(errors or []))
