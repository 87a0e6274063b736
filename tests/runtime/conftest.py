"""One tiny config per registered algorithm (seconds on 2 cores), as TOML tables, and helpers to
write them to disk and to run the command line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from fedcore.config.toml import dump_toml

TINY_MODEL = {"hidden_size": 32, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2}
TINY_DATA = {"train_per_client": 16, "eval_per_client": 8, "max_len": 32}

TINY: dict[str, dict[str, Any]] = {
    "split": {
        "algorithm": "split",
        "model": {**TINY_MODEL, "num_layers": 3},
        "lora": {"r": 4, "alpha": 8.0},
        "split": {"mode": "sequential"},
        "train": {"clients": 2, "rounds": 2, "local_steps": 2, "batch_size": 8},
        "data": TINY_DATA,
    },
    "fedit": {
        "algorithm": "fedit",
        "model": TINY_MODEL,
        "lora": {"r": 4, "alpha": 8.0, "targets": ["q", "v"]},
        "train": {"clients": 2, "rounds": 2, "local_steps": 2, "batch_size": 8},
        "data": TINY_DATA,
    },
    "fibecfed": {
        "algorithm": "fibecfed",
        "model": TINY_MODEL,
        "clients": 2,
        "per_round": 2,
        "rounds": 2,
        "eval_clients": 2,
        "samples_per_client": 12,
        "lora_r": 4,
    },
    **{
        method: {
            "algorithm": method,
            "model": TINY_MODEL,
            "data": {**TINY_DATA, "dirichlet_alpha": 0.1},
            "clients": 2,
            "rounds": 2,
            "local_steps": 2,
            "batch_size": 8,
            "lr": 3e-3,
            "round_timeout_s": 60.0,
        }
        for method in ("fedbcd", "parablock", "fedcybgd")
    },
}


def with_transport(tables: dict[str, Any], **transport: Any) -> dict[str, Any]:
    """``tables`` with its [transport] table updated."""
    return {**tables, "transport": {**tables.get("transport", {}), **transport}}


def write_config(path: Path, tables: dict[str, Any]) -> Path:
    path.write_text(dump_toml(tables))
    return path


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_args(config: Path, address: str, server_key: Path, keys: Path, k: int) -> list[str]:
    """``fedcore join`` arguments of client ``k`` (keypair ``keys/client-k``) as a user types them."""
    return ["join", str(config), "--server", address, "--server-key", str(server_key),
            "--key", str(keys / f"client-{k}"), "--index", str(k)]  # fmt: skip


def cli() -> str:
    """The installed ``fedcore`` command of this interpreter's environment."""
    return str(Path(sys.executable).with_name("fedcore"))


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    """``fedcore ARGS`` as a separate OS process (stdout and stderr captured as text)."""
    env = dict(os.environ, PYTHONSAFEPATH="1", COLUMNS="120")
    return subprocess.Popen([cli(), *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_cli(args: list[str], cwd: Path, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """``fedcore ARGS`` run to completion (stdout and stderr captured as text)."""
    env = dict(os.environ, PYTHONSAFEPATH="1", COLUMNS="120")
    return subprocess.run([cli(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
