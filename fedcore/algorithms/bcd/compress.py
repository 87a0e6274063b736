"""FedCyBGD's compressed download: what the server sends a client before its turn.

The server keeps a mirror of what each client holds. Before client i trains its responsible
block, every block whose global value differs from the mirror is brought up to date:

* the responsible block is always sent whole (``whole``: the client's copy is replaced);
* uncompressed, every other changed block is sent whole too;
* compressed, a changed block that was already updated in this round (by a client earlier in the
  cycle) is sent as its change since the mirror, pruned (P): ``magnitude`` keeps the largest
  ``1 - prune_ratio`` of the entries of each tensor (flat int32 index + value), ``structured``
  keeps the rows with the largest L2 norm (row index + row). What P leaves out stays in the
  difference and goes with a later download;
* compressed, of the changed blocks not yet updated in this round, the layer-drop indicator I
  leaves out a ``drop_ratio`` fraction (chosen at random; the client trains with its own older
  copy of them); the others are sent whole.

Pure functions: the server applies the same payload to its mirror that the client applies to
its model, so both stay equal bit for bit.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping

import torch

from .config import CompressionConfig
from .local import ParamDict

SEP = "|"  # tensor-name suffix separator on the wire ("#" is taken by multi-part codecs)


def prune_magnitude(delta: torch.Tensor, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``ceil((1 - ratio) * numel)`` largest-|.| entries of ``delta``: (flat int32 indices
    sorted ascending, their values in delta's dtype)."""
    flat = delta.reshape(-1)
    keep = max(1, math.ceil((1.0 - ratio) * flat.numel()))
    idx = flat.abs().topk(keep, sorted=False).indices.sort().values
    return idx.to(torch.int32), flat[idx].clone()


def prune_rows(delta: torch.Tensor, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``ceil((1 - ratio) * rows)`` rows of ``delta`` (dim 0) with the largest L2 norm:
    (int32 row indices sorted ascending, the rows). A 1-D tensor's rows are its entries."""
    rows = delta.reshape(delta.shape[0], -1) if delta.dim() > 1 else delta.reshape(-1, 1)
    keep = max(1, math.ceil((1.0 - ratio) * rows.shape[0]))
    idx = rows.norm(dim=1).topk(keep, sorted=False).indices.sort().values
    return idx.to(torch.int32), rows[idx].clone()


def encode_download(
    global_params: Mapping[str, torch.Tensor],
    mirror: Mapping[str, torch.Tensor],
    blocks: list[list[str]],
    responsible: int,
    updated_this_round: set[int],
    config: CompressionConfig,
    rng: random.Random,
) -> tuple[ParamDict, dict[str, list[str]]]:
    """The payload for one client: (tensors by wire name, {"whole" | "sparse" | "rows" |
    "dropped": parameter names}). ``mirror`` is what the client holds now."""
    tensors: ParamDict = {}
    kinds: dict[str, list[str]] = {"whole": [], "sparse": [], "rows": [], "dropped": []}
    changed = [
        b
        for b, names in enumerate(blocks)
        if b != responsible and any(not torch.equal(global_params[n], mirror[n]) for n in names)
    ]
    dropped: set[int] = set()
    if config.enabled:
        stale = [b for b in changed if b not in updated_this_round]
        dropped = set(rng.sample(stale, round(config.drop_ratio * len(stale))))
    for b in [responsible, *changed]:
        for name in blocks[b]:
            if b in dropped:
                kinds["dropped"].append(name)
            elif b == responsible or not config.enabled or b not in updated_this_round:
                tensors[name] = global_params[name].detach().clone()
                kinds["whole"].append(name)
            else:
                diff = global_params[name] - mirror[name]
                prune, kind = (prune_magnitude, "sparse") if config.prune == "magnitude" else (prune_rows, "rows")
                idx, val = prune(diff, config.prune_ratio)
                tensors[name + SEP + "idx"], tensors[name + SEP + "val"] = idx, val
                kinds[kind].append(name)
    return tensors, kinds


@torch.no_grad()
def apply_download(params: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor], kinds: dict) -> None:
    """Bring ``params`` (a client's model, or the server's mirror of it) up to date in place.
    Raises ``ValueError`` for a payload that does not fit ``params`` (names, shapes, indices)."""
    if not isinstance(kinds, dict) or any(not isinstance(v, list) for v in kinds.values()):
        raise ValueError("download kinds must map a kind to a list of parameter names")
    missing = [
        n
        for kind, names in kinds.items()
        if kind != "dropped"
        for name in names
        for n in ([name] if kind == "whole" else [name + SEP + "idx", name + SEP + "val"])
        if n not in tensors
    ]
    if missing:
        raise ValueError(f"download lacks tensors {missing[:3]}")
    for name in kinds.get("whole", []):
        _known(params, name)
        if tensors[name].shape != params[name].shape:
            raise ValueError(f"{name}: shape {tuple(tensors[name].shape)} != {tuple(params[name].shape)}")
        params[name].copy_(tensors[name])
    for kind in ("sparse", "rows"):
        for name in kinds.get(kind, []):
            _known(params, name)
            p = params[name]
            idx = tensors[name + SEP + "idx"].to(p.device).long()
            val = tensors[name + SEP + "val"].to(device=p.device, dtype=p.dtype)
            view = p.view(-1) if kind == "sparse" else (p.view(p.shape[0], -1) if p.dim() > 1 else p.view(-1, 1))
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= view.shape[0]):
                raise ValueError(f"{name}: index out of range for {tuple(p.shape)}")
            if val.shape != (idx.numel(), *view.shape[1:]):
                raise ValueError(f"{name}: values of shape {tuple(val.shape)} do not match {idx.numel()} indices")
            view[idx] += val


def _known(params: Mapping[str, torch.Tensor], name: str) -> None:
    if name not in params:
        raise ValueError(f"download names unknown parameter {name!r}")
