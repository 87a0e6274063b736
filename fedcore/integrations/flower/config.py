"""A fedcore config from Flower's ``run_config``, and a node's shard from its ``node_config``.

Flower flattens ``[tool.flwr.app.config]`` to dotted keys of scalar values: ``train.rounds = 3``
arrives as ``{"train.rounds": 3}``. fedcore reads them back into its tables: ``algorithm`` names
the method, an optional ``config`` names a fedcore TOML file (relative to the app's folder, or
absolute) whose tables the dotted keys then override, and a string that starts with ``[`` or
``{`` is JSON (Flower's config values cannot be lists: ``lora.targets = '["q", "v"]'``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedcore.algorithms import algorithm_of, get_algorithm
from fedcore.config import read_toml

FLOWER_ONLY = "flower."  # run_config keys of the Flower apps themselves (e.g. flower.host), not fedcore's


def config_from_run_config(run_config: Mapping[str, Any], *, app_dir: str | Path | None = None) -> Any:
    """The fedcore config of a Flower ``run_config`` (see the module docstring); ``ValueError``
    (one line) on unknown keys, bad values or a missing ``algorithm``."""
    tables: dict[str, Any] = {}
    base = run_config.get("config")
    if isinstance(base, str) and base:
        path = Path(base)
        if not path.is_absolute() and app_dir is not None:
            path = Path(app_dir) / path
        tables = read_toml(path)
    for key, value in run_config.items():
        if key == "config" or key.startswith(FLOWER_ONLY):
            continue
        _put(tables, key.split("."), _decode(value, key))
    if "algorithm" not in tables:
        raise ValueError('the Flower run_config names no fedcore algorithm (algorithm = "fedit", ...)')
    return get_algorithm(str(tables["algorithm"])).config_from_dict(tables)


def run_config_of(config: Any) -> dict[str, bool | int | float | str]:
    """The inverse: a config as Flower run_config entries (dotted keys, lists as JSON strings),
    e.g. for ``flwr run --run-config`` or an app's ``[tool.flwr.app.config]``."""
    out: dict[str, bool | int | float | str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        elif value is not None:
            key = prefix[:-1]
            out[key] = json.dumps(value) if isinstance(value, list | tuple) else value

    walk("", algorithm_of(config).config_to_dict(config))
    return out


def partition_of(node_config: Mapping[str, Any], clients: int) -> int:
    """The client index (shard) a node serves: its ``partition-id``; ``ValueError`` when it is
    missing or not in [0, clients)."""
    raw = node_config.get("partition-id")
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw < clients:
        raise ValueError(
            f"node_config partition-id must be an int in [0, {clients - 1}] for this config, got {raw!r} "
            '(flower-supernode --node-config "partition-id=N")'
        )
    return raw


def _decode(value: Any, key: str) -> Any:
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"run_config {key}: not JSON: {exc}") from exc
    return value


def _put(tables: dict[str, Any], path: list[str], value: Any) -> None:
    node = tables
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"run_config {'.'.join(path)}: {part!r} is a value, not a table")
        node = child
    node[path[-1]] = value
