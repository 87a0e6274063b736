"""Run FedBCD / FedCyBGD / ParaBlock as real processes: the server here, each client a spawned
process with its own CURVE keypair, every link shaped to ``transport.mbps`` in both directions.

Each process builds the same base model and data shard from the config's seeds, so only block
updates cross the wire.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fedcore.algorithms.bcd.config import BCDConfig, bcd_config_from_dict, bcd_config_to_dict
from fedcore.algorithms.bcd.runner import (
    SERVERS,
    BCDResult,
    build_trainer,
    client_data,
    conclude,
    global_model,
    make_client,
)
from fedcore.algorithms.bcd.server import RoundRecord
from fedcore.algorithms.bcd.timeline import Timeline

from .launch import await_hellos, connect_client, kill_leftovers, open_server, spawn_client


def client_main(
    config_dict: dict[str, Any], index: int, address: str, key_file: str | None, server_key_file: str | None
) -> None:
    """Entry point of one client process: build its model and shard, connect, obey the server."""
    config = bcd_config_from_dict(config_dict)
    torch.set_num_threads(max(1, config.threads_per_client))
    trainer = build_trainer(config, index, client_data(config)[index])
    link = connect_client(config.transport, address, key_file, server_key_file)
    try:
        link.send({}, {"op": "hello", "client": index}, tag="control")
        make_client(config, link, trainer, index, timeline=Timeline()).run()
    finally:
        link.close()


def run_bcd_processes(
    config: BCDConfig,
    *,
    on_spawn: Callable[[list[subprocess.Popen]], None] | None = None,
    on_record: Callable[[RoundRecord], None] | None = None,
    keys_dir: Path | None = None,
) -> BCDResult:
    """Run ``config`` with the server in this process and ``config.clients`` client processes.
    ``on_spawn(procs)`` gets the processes once started; ``on_record(record)`` each finished round
    (tests kill a process there to watch the run go on without it)."""
    t0 = time.perf_counter()
    data = client_data(config)
    params, blocks = global_model(config)
    tmp = None
    if keys_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="fedcore-keys-")
        keys_dir = Path(tmp.name)
    server_link, key_args = open_server(config.transport, config.clients, keys_dir)
    as_dict = bcd_config_to_dict(config)
    procs = [spawn_client(as_dict, k, server_link.address, *key_args[k], entry="bcd") for k in range(config.clients)]
    if on_spawn is not None:
        on_spawn(procs)
    timeline = Timeline()
    try:
        peers = await_hellos(server_link, procs)
        server = SERVERS[config.method](
            server_link,
            peers,
            params,
            blocks,
            config,
            samples=[len(d.train) for d in data],
            timeline=timeline,
            on_record=on_record,
        )
        records = server.run()
        losses = conclude(server)
        for k in server.active:  # the ones that said bye; dropped ones were told to stop, or are dead
            try:
                procs[k].wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass  # killed below
        stats = server_link.stats()
    finally:
        kill_leftovers(procs)
        server_link.close()
        if tmp is not None:
            tmp.cleanup()
    return BCDResult.of(server, records, losses, stats, t0)
