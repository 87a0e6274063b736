"""An optimizer's and its LR schedule's state as message tensors plus JSON, and back: what a
client sends its server for a checkpoint, and gets back when a resumed run reloads it.

``optimizer_state(opt, scheduler)`` -> (tensors, info): every tensor of ``opt.state_dict()["state"]``
under ``opt.<param index>.<key>`` (AdamW: ``step``, ``exp_avg``, ``exp_avg_sq``; CPU copies, dtypes
kept), and ``info`` = {"param_groups": ..., "scalars": ..., "scheduler": ...}, plain JSON values.
``load_optimizer_state`` puts both back exactly (bit for bit), after checking they fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

PREFIX = "opt."

__all__ = ["PREFIX", "load_optimizer_state", "optimizer_state"]


def optimizer_state(
    opt: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``opt``'s state as (tensors, JSON info); ``scheduler``'s ``state_dict`` goes into the info."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{PREFIX}{index}.{key}"] = value.detach().to("cpu", copy=True)
            else:
                scalars.setdefault(str(index), {})[key] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in sd["param_groups"]]
    info: dict[str, Any] = {"param_groups": groups, "scalars": scalars}
    if scheduler is not None:
        info["scheduler"] = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    return tensors, info


def load_optimizer_state(
    opt: torch.optim.Optimizer,
    tensors: Mapping[str, torch.Tensor],
    info: Mapping[str, Any],
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> None:
    """Put an ``optimizer_state`` back into ``opt`` (and ``scheduler``); ``ValueError`` (one line)
    when it is not one of an optimizer over the same parameters."""
    own = opt.state_dict()
    groups = info.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(own["param_groups"]):
        raise ValueError(
            f"optimizer state has {_len(groups)} parameter groups, this optimizer {len(own['param_groups'])}"
        )
    for theirs, ours in zip(groups, own["param_groups"], strict=True):
        if not isinstance(theirs, dict) or theirs.get("params") != ours["params"]:
            raise ValueError("optimizer state is of other parameters")
    params = {
        i: p
        for g, ours in zip(opt.param_groups, own["param_groups"], strict=True)
        for i, p in zip(ours["params"], g["params"], strict=True)
    }
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith(PREFIX):
            continue
        index, _, key = name[len(PREFIX) :].partition(".")
        if not index.isdigit() or int(index) not in params or not key:
            raise ValueError(f"optimizer state tensor {name!r} names no parameter of this optimizer")
        i = int(index)
        if key != "step" and value.shape != params[i].shape:
            raise ValueError(
                f"optimizer state {name!r} has shape {tuple(value.shape)}, its parameter {tuple(params[i].shape)}"
            )
        state.setdefault(i, {})[key] = value
    for index, entry in (info.get("scalars") or {}).items():
        if not str(index).isdigit() or int(index) not in params or not isinstance(entry, dict):
            raise ValueError(f"optimizer state scalars {index!r} name no parameter of this optimizer")
        state.setdefault(int(index), {}).update(entry)
    restored = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in groups]
    opt.load_state_dict({"state": state, "param_groups": restored})
    if scheduler is not None:
        sched = info.get("scheduler")
        if not isinstance(sched, dict):
            raise ValueError("optimizer state has no LR schedule state")
        scheduler.load_state_dict({**scheduler.state_dict(), **sched})


def _len(value: Any) -> int | str:
    return len(value) if isinstance(value, list) else type(value).__name__
