"""Neuron-wise sparse updates for the layers outside the GAL.

A neuron is an output row of a LoRA factor's weight. Its score is the row sum of the diagonal
Fisher of that weight, F-hat_ij accumulated with momentum over the first T' epochs
(``fedcore.fisher.FisherAccumulator`` keeps exactly this as ``fisher_rowsum``); the top ``rho``
fraction of rows per weight are updated and the rest are frozen by masking their gradients.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn


def neuron_scores(fisher_diag: torch.Tensor) -> torch.Tensor:
    """Row sums of a (d_out, d_in) diagonal Fisher: one score per output neuron, fp32 (d_out,)."""
    if fisher_diag.dim() != 2:
        raise ValueError(f"need a (d_out, d_in) Fisher diagonal, got shape {tuple(fisher_diag.shape)}")
    return fisher_diag.float().sum(dim=1)


def top_neurons(scores: torch.Tensor, rho: float) -> torch.Tensor:
    """Bool (d_out,): the ceil(rho * d_out) highest-scoring neurons (ties: the lower index first)."""
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho must be in [0, 1], got {rho}")
    k = math.ceil(rho * scores.numel())
    keep = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if k:
        order = sorted(range(scores.numel()), key=lambda i: (-float(scores[i]), i))
        keep[torch.tensor(order[:k], device=scores.device)] = True
    return keep


class NeuronMask:
    """Freezes every neuron (row) of the named parameters except the selected ones: gradients of
    unselected rows are zeroed by a hook, so any optimizer leaves those rows unchanged (AdamW with
    weight decay 0; decoupled weight decay would still shrink them, so it is refused)."""

    def __init__(self, model: nn.Module, selected: Mapping[str, torch.Tensor]):
        params = dict(model.named_parameters())
        unknown = sorted(set(selected) - set(params))
        if unknown:
            raise ValueError(f"no such parameters: {unknown}")
        self._handles = []
        for name, keep in selected.items():
            p = params[name]
            if keep.shape != p.shape[:1] or keep.dtype != torch.bool:
                raise ValueError(
                    f"{name}: need a bool mask of shape {tuple(p.shape[:1])}, got {keep.dtype} {tuple(keep.shape)}"
                )
            rows = keep.to(p.device).view(-1, *([1] * (p.dim() - 1))).to(p.dtype)
            self._handles.append(p.register_hook(lambda g, rows=rows: g * rows))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @staticmethod
    def check_optimizer(opt: torch.optim.Optimizer) -> None:
        """Refuse optimizers that change masked rows anyway (weight decay)."""
        for group in opt.param_groups:
            if group.get("weight_decay", 0.0):
                raise ValueError("neuron masking needs weight_decay=0 (decay would move frozen rows)")
