"""The server role of each split mode, built from a run config (one registration point)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from fedcore.model import SplitModel

from .client_batch import ClientBatchServerRole
from .config import SplitRunConfig
from .hierarchical import HierarchicalServerRole, replicate
from .server_role import SplitServerRole, StepReport
from .setup import lr_schedule, server_parts, server_steps, wire_codecs

SERVER_ROLES: dict[str, type[SplitServerRole]] = {
    "sequential": SplitServerRole,
    "client-batch": ClientBatchServerRole,
    "server-hierarchical": HierarchicalServerRole,
}


def make_server_role(
    config: SplitRunConfig,
    link: Any,
    sm: SplitModel,
    clients: list[str],
    weights: list[float],
    *,
    on_step: Callable[[StepReport], None] | None = None,
) -> SplitServerRole:
    """The server role for ``config.split.mode`` over ``link``, serving ``clients`` (FedAvg weights)."""
    parts = server_parts(config, sm)
    kw: dict[str, Any] = {"codecs": wire_codecs(config, -1)[0], "on_step": on_step}
    if config.split.mode == "server-hierarchical":
        schedule = functools.partial(lr_schedule, total_steps=server_steps(config))
        optimizer = functools.partial(torch.optim.AdamW, lr=config.train.lr, weight_decay=0.0)  # as server_parts
        replicas = replicate(parts, len(clients), optimizer, schedule)
        return HierarchicalServerRole(link, replicas, clients, weights, **kw)
    return SERVER_ROLES[config.split.mode](link, parts, clients, weights, **kw)
