"""Layer importance under an adversarial input perturbation, and the global aggregation layers.

For a batch with input embeddings e, the perturbation is one normalised gradient-ascent step on
the loss within an l_p ball of radius gamma (p = 2: delta = gamma * g / ||g||_2 per sample;
p = inf: delta = gamma * sign(g)), g = dL/de. A layer's sensitivity is the relative change of its
output's Frobenius norm, | ||h_l(e + delta)||_F - ||h_l(e)||_F | / ||h_l(e)||_F, averaged over the
client's batches. The server averages clients' scores weighted by n_k and keeps the ``count`` (or
``ratio`` of) layers with the highest score as global aggregation layers (GAL); the others stay
local. The count is configured (a number or a ratio) or comes from ``eigengap_count``, an
approximation of the paper's eigengap rule on the sorted scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


def _perturbation(grad: torch.Tensor, gamma: float, p: float) -> torch.Tensor:
    if p == math.inf:
        return gamma * grad.sign()
    if p != 2:
        raise ValueError(f"p must be 2 or inf, got {p}")
    norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))
    return gamma * grad / norms


def layer_output_sensitivity(
    model: Any, layers: Sequence[nn.Module], batch: dict[str, torch.Tensor], *, gamma: float = 0.01,
    p: float = 2.0,
) -> torch.Tensor:  # fmt: skip
    """(L,) fp32 relative change of each of ``layers``' output Frobenius norm when the input
    embeddings of ``batch`` (input_ids, attention_mask, labels) move by the adversarial delta.
    ``model`` is a transformers causal LM (``get_input_embeddings``, ``inputs_embeds``)."""
    embed = model.get_input_embeddings()
    outputs: list[torch.Tensor] = []

    def keep(_mod, _inp, out):
        outputs.append((out[0] if isinstance(out, tuple) else out).detach())

    with torch.no_grad():
        clean_embeds = embed(batch["input_ids"])
    embeds = clean_embeds.clone().requires_grad_(True)
    loss = model(inputs_embeds=embeds, attention_mask=batch.get("attention_mask"), labels=batch["labels"]).loss
    (grad,) = torch.autograd.grad(loss, embeds)
    handles = [layer.register_forward_hook(keep) for layer in layers]
    try:
        with torch.no_grad():
            model(inputs_embeds=clean_embeds, attention_mask=batch.get("attention_mask"))
            clean = [o.float().norm() for o in outputs]
            outputs.clear()
            model(
                inputs_embeds=clean_embeds + _perturbation(grad, gamma, p), attention_mask=batch.get("attention_mask")
            )
            moved = [o.float().norm() for o in outputs]
    finally:
        for h in handles:
            h.remove()
    return torch.stack([(m - c).abs() / c.clamp_min(1e-12) for c, m in zip(clean, moved, strict=True)])


def aggregate_layer_scores(scores: Sequence[torch.Tensor], samples: Sequence[int]) -> torch.Tensor:
    """The server's global layer scores: sum_k n_k s_k / sum_k n_k."""
    if len(scores) != len(samples) or not scores or sum(samples) <= 0:
        raise ValueError("need one score vector per client and a positive total of samples")
    total = float(sum(samples))
    return sum(s.float() * (n / total) for s, n in zip(scores, samples, strict=True))  # type: ignore[return-value]


def eigengap_count(scores: torch.Tensor) -> int:
    """How many layers the gap rule keeps: with the scores sorted descending s_(1) >= ... >= s_(L),
    the k in [1, L-1] maximising s_(k) - s_(k+1) (the first k at ties).

    An approximation of the paper's eigengap rule, which looks for the largest gap in a spectrum:
    here the sorted layer scores stand in for that spectrum (no affinity matrix is built)."""
    vals = sorted((float(x) for x in scores.reshape(-1)), reverse=True)
    if len(vals) < 2:
        return len(vals)
    gaps = [vals[i] - vals[i + 1] for i in range(len(vals) - 1)]
    return 1 + max(range(len(gaps)), key=lambda i: (gaps[i], -i))


def select_global_layers(
    scores: torch.Tensor, *, count: int | None = None, ratio: float | None = None, eigengap: bool = False
) -> list[int]:
    """Indices (ascending) of the ``count`` layers, or ``round(ratio * L)``, or ``eigengap_count``
    of them, with the highest scores. Give exactly one of the three."""
    n = scores.numel()
    if (count is not None) + (ratio is not None) + bool(eigengap) != 1:
        raise ValueError("give exactly one of count, ratio and eigengap")
    if eigengap:
        k = eigengap_count(scores)
    else:
        k = count if count is not None else round(float(ratio) * n)  # type: ignore[arg-type]
    if not 0 <= k <= n:
        raise ValueError(f"the global layer count must be in [0, {n}], got {k}")
    order = sorted(range(n), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:k])


def gal_rule(config: Any) -> dict[str, Any]:
    """``select_global_layers`` keywords for a FibecFedConfig: the gap rule or the ratio."""
    return {"eigengap": True} if getattr(config, "gal_eigengap", False) else {"ratio": config.gal_ratio}
