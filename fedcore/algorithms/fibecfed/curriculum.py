"""The curriculum: batches sorted by Fisher difficulty, and how many of them a round uses.

Pace (the issue's statement of the paper's schedule): client k with n_k samples and batch size B
uses, in round t of T,

    B_k^t = min(ceil(n_k / B), ceil((beta + (1 - beta) * f(t / (alpha * T))) * n_k / B))

batches, the easiest first, with f: [0, inf) -> [0, 1] non-decreasing and f(x) = 1 for x >= 1:
linear f(x) = x, sqrt f(x) = sqrt(x), exp f(x) = (e^x - 1) / (e - 1) (our choice of the
exponential family's normalisation: f(0) = 0, f(1) = 1). Defaults follow the paper's Table 8:
beta 0.6, alpha 0.8, linear. Rounds count from 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

PACE_FUNCTIONS: dict[str, Callable[[float], float]] = {
    "linear": lambda x: x,
    "sqrt": math.sqrt,
    "exp": lambda x: (math.exp(x) - 1.0) / (math.e - 1.0),
}


def pace(t: int, total_rounds: int, *, beta: float = 0.6, alpha: float = 0.8, kind: str = "linear") -> float:
    """The fraction of a client's data used in round ``t`` (0-based) of ``total_rounds``, in [beta, 1]."""
    if kind not in PACE_FUNCTIONS:
        raise ValueError(f"pace kind must be one of {sorted(PACE_FUNCTIONS)}, got {kind!r}")
    if not 0.0 <= beta <= 1.0 or alpha <= 0 or total_rounds < 1 or t < 0:
        raise ValueError(
            f"need 0 <= beta <= 1, alpha > 0, total_rounds >= 1, t >= 0; got {beta}, {alpha}, {total_rounds}, {t}"
        )
    x = min(1.0, t / (alpha * total_rounds))
    return beta + (1.0 - beta) * min(1.0, PACE_FUNCTIONS[kind](x))


def batches_in_round(
    t: int, total_rounds: int, samples: int, batch_size: int, *, beta: float = 0.6, alpha: float = 0.8,
    kind: str = "linear",
) -> int:  # fmt: skip
    """B_k^t: how many of the client's (difficulty-sorted) batches round ``t`` trains on (>= 1)."""
    if samples < 1 or batch_size < 1:
        raise ValueError(f"samples and batch_size must be >= 1, got {samples}, {batch_size}")
    available = math.ceil(samples / batch_size)
    wanted = math.ceil(pace(t, total_rounds, beta=beta, alpha=alpha, kind=kind) * samples / batch_size - 1e-9)
    return max(1, min(available, wanted))


def order_by_difficulty(scores: Sequence[float]) -> list[int]:
    """Batch indices from the easiest (smallest Fisher trace) to the hardest; ties keep their order."""
    return sorted(range(len(scores)), key=lambda i: (scores[i], i))
