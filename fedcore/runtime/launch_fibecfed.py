"""Run FibecFed / FedIT as real processes: the server here, each client a spawned process with its
own CURVE keypair; the same roles as ``fedcore.algorithms.fibecfed.roles.run_roles_inprocess``."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import torch

from fedcore.algorithms.fibecfed.config import FibecFedConfig
from fedcore.algorithms.fibecfed.local import build_setup
from fedcore.algorithms.fibecfed.roles import FibecFedClient, FibecFedServer, RoleRunResult

from .config import TransportConfig
from .launch import await_hellos, connect_client, kill_leftovers, open_server, spawn_client


def client_main(
    config_dict: dict[str, Any], index: int, address: str, key_file: str | None, server_key_file: str | None
) -> None:
    """Entry point of one client process: build its shard, connect, obey the server."""
    config = FibecFedConfig(**config_dict["fibecfed"])
    transport = TransportConfig(**config_dict["transport"])
    torch.set_num_threads(1)
    model, start_state, train, evals, sizes = build_setup(config)
    link = connect_client(transport, address, key_file, server_key_file)
    try:
        link.send({}, {"op": "hello", "client": index}, tag="control")
        FibecFedClient(link, model, start_state, train[index], evals[index], sizes[index], config, index=index).run()
    finally:
        link.close()


def run_fibecfed_processes(config: FibecFedConfig, transport: TransportConfig | None = None) -> RoleRunResult:
    """``config.clients`` client processes (keep it small: each builds a model), the server here."""
    transport = transport or TransportConfig()
    _, start_state, _, _, sizes = build_setup(config)
    with tempfile.TemporaryDirectory(prefix="fedcore-keys-") as keys:
        server, key_args = open_server(transport, config.clients, Path(keys))
        as_dict = {"fibecfed": dataclasses.asdict(config), "transport": dataclasses.asdict(transport)}
        procs = [
            spawn_client(as_dict, k, server.address, *key_args[k], entry="fibecfed") for k in range(config.clients)
        ]
        try:
            peers = await_hellos(server, procs)
            result = FibecFedServer(server, peers, sizes, start_state, config).run()
            for p in procs:
                p.wait(timeout=30)
        finally:
            kill_leftovers(procs)
            server.close()
    return result
