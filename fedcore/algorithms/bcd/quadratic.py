"""A deterministic quadratic objective with named blocks: FedBCD and ParaBlock by hand.

Client i minimises f_i(x) = 1/2 (x - c_i)^T A (x - c_i) over x in R^n (float64), with n split
into blocks of named coordinates. Local training is K steps of gradient descent on the chosen
block: x_b <- x_b - gamma * [A (x - c_i)]_b. With a block-diagonal A the blocks do not interact,
so a stale update of one block cannot change another block's gradient.
"""

from __future__ import annotations

import torch

from .local import ParamDict, snapshot


class QuadraticBlockTrainer:
    """``BlockTrainer`` on f_i. ``a``: (n, n) symmetric positive definite; ``c``: (n,); ``sizes``:
    the block sizes (sum n). Parameters are named ``"x0"``, ``"x1"``, ... one tensor per block."""

    def __init__(
        self, a: torch.Tensor, c: torch.Tensor, x0: torch.Tensor, sizes: list[int], *, steps: int, gamma: float
    ):
        if sum(sizes) != a.shape[0] or a.shape != (c.numel(), c.numel()) or x0.shape != c.shape:
            raise ValueError("need a (n, n), c (n,), x0 (n,) and block sizes summing to n")
        self.a, self.c, self.steps, self.gamma = a.double(), c.double(), steps, gamma
        self.sizes = sizes
        self.blocks = [[f"x{b}"] for b in range(len(sizes))]
        self.params: ParamDict = {f"x{b}": part.clone() for b, part in enumerate(x0.double().split(sizes))}
        self.num_samples = 1

    def vector(self) -> torch.Tensor:
        return torch.cat([self.params[f"x{b}"] for b in range(len(self.sizes))])

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        return self.a @ (x - self.c)

    def train_delta(self, block: int) -> tuple[ParamDict, float]:
        name = f"x{block}"
        start = snapshot(self.params, [name])
        lo = sum(self.sizes[:block])
        hi = lo + self.sizes[block]
        x = self.vector()
        for _ in range(self.steps):
            x[lo:hi] -= self.gamma * self.gradient(x)[lo:hi]
        loss = float(0.5 * (x - self.c) @ self.a @ (x - self.c))
        return {name: x[lo:hi] - start[name]}, loss

    def block_scores(self) -> list[float]:
        g = self.gradient(self.vector()).split(self.sizes)
        return [float(gb.pow(2).sum()) for gb in g]

    def evaluate(self) -> float:
        x = self.vector()
        return float(0.5 * (x - self.c) @ self.a @ (x - self.c))
