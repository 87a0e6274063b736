"""Running fedcore's Flower apps in Flower's simulation engine (``run_simulation``, Ray backend),
and one tiny config per method (tests/runtime/conftest.py's, as config objects)."""

from __future__ import annotations

import copy
import os
import tempfile
from typing import Any

import pytest

pytest.importorskip("flwr", reason="the Flower integration needs the extra: pip install 'fedcore[flower]'")

from fedcore.algorithms import get_algorithm  # noqa: E402

os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # Ray's FutureWarning about GPU env vars

TINY_MODEL = {"hidden_size": 32, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2}
TINY_DATA = {"train_per_client": 16, "eval_per_client": 8, "max_len": 32}


def tiny(algorithm: str, clients: int = 3, **tables: Any) -> Any:
    """A tiny config of ``algorithm`` (seconds on 2 cores); ``tables`` replace or add keys."""
    common = {"model": TINY_MODEL, "data": {**TINY_DATA, "dirichlet_alpha": 0.5}}
    data: dict[str, Any] = {
        "fedit": {
            "lora": {"r": 4, "alpha": 8.0, "targets": ["q", "v"]},
            "train": {"clients": clients, "rounds": 2, "local_steps": 2, "batch_size": 8},
            "round_timeout_s": 120.0,
        },
        "fedbcd": {"clients": clients, "rounds": 3, "local_steps": 2, "batch_size": 8, "lr": 3e-3},
        "split": {
            "model": {**TINY_MODEL, "num_layers": 3},
            "lora": {"r": 4, "alpha": 8.0},
            "split": {"mode": "client-batch"},
            "train": {"clients": clients, "rounds": 2, "local_steps": 2, "batch_size": 8},
        },
        "fibecfed": {
            "clients": clients, "per_round": clients, "rounds": 2, "eval_clients": clients,
            "samples_per_client": 12, "lora_r": 4, "data": {"dirichlet_alpha": 1.0, "max_len": 48},
        },
    }["fedbcd" if algorithm in ("parablock", "fedcybgd") else algorithm]  # fmt: skip
    merged = {"algorithm": algorithm, **copy.deepcopy(common), **copy.deepcopy(data)}
    for key, value in tables.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return get_algorithm(algorithm).config_from_dict(merged)


def simulate(server_app: Any, client_app: Any, nodes: int, *, cpus_per_node: float = 1.0) -> None:
    """``flwr.simulation.run_simulation`` with ``nodes`` SuperNodes; ``cpus_per_node`` < 1 lets
    that many ClientApps run at once on 2 cores (the control-plane mode needs them all alive).
    Runs from the temporary folder: Ray adds the driver's working folder to its workers'
    ``sys.path``, and a fedcore checkout's ``kernels/`` there shadows the ``kernels`` package
    transformers looks for."""
    from flwr.simulation import run_simulation

    here = os.getcwd()
    os.chdir(tempfile.gettempdir())  # Ray puts this folder on its workers' sys.path: not the checkout
    try:
        resources = {"client_resources": {"num_cpus": cpus_per_node}}
        run_simulation(server_app, client_app, num_supernodes=nodes, backend_config=resources)
    finally:
        os.chdir(here)
