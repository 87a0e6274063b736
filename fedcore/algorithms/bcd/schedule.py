"""Which block the clients train in each round (federated block-coordinate descent schedules)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from .config import SCHEDULES


class BlockSchedule:
    """Picks block b_t in [0, num_blocks) for round t.

    ``random`` (default): uniform, independently per round (the same block may come twice in a
    row); ``sequential``: 0, 1, ..., B-1, 0, ...; ``reverse``: B-1, ..., 0, B-1, ...; ``gradient``:
    the block with the largest squared gradient norm in ``scores`` (the clients' latest reports),
    uniform while no scores exist. The sequence is a function of ``seed`` and the scores only.
    """

    def __init__(self, kind: str, num_blocks: int, *, seed: int = 0):
        if kind not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.kind, self.num_blocks = kind, num_blocks
        self.rng = random.Random(seed)  # the random schedule's stream (a checkpoint keeps its state)

    def block(self, rnd: int, scores: Sequence[float] | None = None) -> int:
        """Block of round ``rnd`` (call once per round, in order: ``random`` draws from a stream)."""
        b = self.num_blocks
        if self.kind == "sequential":
            return rnd % b
        if self.kind == "reverse":
            return b - 1 - rnd % b
        if self.kind == "gradient" and scores is not None:
            if len(scores) != b:
                raise ValueError(f"gradient schedule needs {b} block scores, got {len(scores)}")
            return max(range(b), key=lambda i: (scores[i], -i))
        return self.rng.randrange(b)


def sample_participants(clients: Sequence[int], fraction: float, rng: random.Random) -> list[int]:
    """``ceil(fraction * len(clients))`` of ``clients`` (at least one), drawn without replacement,
    returned sorted."""
    if not clients:
        raise ValueError("no clients to sample from")
    k = max(1, -(-int(round(fraction * len(clients) * 1e6)) // 1_000_000))
    return sorted(rng.sample(list(clients), min(k, len(clients))))
