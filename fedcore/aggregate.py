"""Aggregation math as pure functions: tensors and weights in, tensors out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def mismatch(upload: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor] | None = None) -> str | None:
    """Why ``upload`` cannot be averaged with ``reference`` (None if it can): other names, a
    tensor whose shape or dtype differs, or one that is not a finite floating tensor. Without a
    reference only the last check applies. Check every client's upload before ``weighted_average``."""
    if not upload:
        return "an empty upload"
    if reference is not None and set(upload) != set(reference):
        missing, extra = sorted(set(reference) - set(upload)), sorted(set(upload) - set(reference))
        return f"names differ: missing {missing[:3]}, unexpected {extra[:3]}"
    for name, tensor in upload.items():
        if reference is not None:
            ref = reference[name]
            if tensor.shape != ref.shape:
                return f"{name}: shape {tuple(tensor.shape)}, expected {tuple(ref.shape)}"
            if tensor.dtype != ref.dtype:
                return f"{name}: dtype {tensor.dtype}, expected {ref.dtype}"
        if not tensor.is_floating_point() or not bool(torch.isfinite(tensor).all()):
            return f"{name}: not a finite floating tensor"
    return None


def weighted_average(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """FedAvg: sum_k w_k * state_k / sum_k w_k, key by key, accumulated in fp32 (fp64 stays fp64).

    Every state must have the same keys and shapes. Returns tensors in each key's original dtype.
    Raises ``ValueError`` for no states, mismatched keys, or weights that are negative or sum to 0.
    """
    if not states:
        raise ValueError("weighted_average needs at least one state")
    if len(weights) != len(states):
        raise ValueError(f"{len(weights)} weights for {len(states)} states")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {list(weights)}")
    keys = set(states[0])
    for i, state in enumerate(states[1:], start=1):
        if set(state) != keys:
            raise ValueError(f"state {i} has keys {sorted(set(state) ^ keys)} that state 0 does not share")
    total = float(sum(weights))
    out = {}
    for key, first in states[0].items():
        acc_dtype = torch.float64 if first.dtype == torch.float64 else torch.float32
        acc = torch.zeros(first.shape, dtype=acc_dtype, device=first.device)
        for state, w in zip(states, weights, strict=True):
            acc += state[key].to(acc_dtype) * (w / total)
        out[key] = acc.to(first.dtype)
    return out
