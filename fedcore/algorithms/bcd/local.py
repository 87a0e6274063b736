"""Local training of one coordinate block, and the block-state arithmetic the methods share.

A client's model is a flat ``{name: tensor}`` of live parameters, cut into blocks (lists of
names). ``train_delta`` runs K local steps on one block from the current values and returns the
change (the client's Delta^i), leaving the parameters as they were: each method then decides
how much of it to apply (ParaBlock: eta * Delta^i at once; FedBCD: only the aggregate).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

import torch
from torch import nn

from fedcore.lora import train_blocks
from fedcore.model import group_blocks

ParamDict = dict[str, torch.Tensor]


class BlockTrainer(Protocol):
    """What the BCD roles need from a client's local model and data."""

    params: ParamDict  # live parameters, the union of the blocks
    blocks: list[list[str]]  # parameter names of each block
    num_samples: int  # training examples held (aggregation weight)

    def train_delta(self, block: int) -> tuple[ParamDict, float]:
        """K local steps on ``block`` from the current values: (Delta^i, mean training loss)."""
        ...

    def block_scores(self) -> list[float]:
        """Squared gradient norm of each block on one batch (the gradient-based schedule)."""
        ...

    def evaluate(self) -> float:
        """Mean loss on held-out data."""
        ...

    def load(self, params: Mapping[str, torch.Tensor], drawn: int) -> None:
        """Take ``params`` (every name of ``self.params``) and move the training stream to
        ``drawn`` batches from its start (a fresh process of a resumed run)."""
        ...


def snapshot(params: Mapping[str, torch.Tensor], names: Iterable[str]) -> ParamDict:
    """Detached copies of ``params[name]`` for ``names``."""
    return {n: params[n].detach().clone() for n in names}


@torch.no_grad()
def add_scaled_(params: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor], scale: float) -> None:
    """``params[n] += scale * delta[n]`` in place for every name of ``delta`` (moved to params'
    device and dtype)."""
    for name, d in delta.items():
        p = params[name]
        # a synchronous copy: d may sit in a pinned receive buffer that is recycled right after
        p.add_(d.to(device=p.device, dtype=p.dtype), alpha=scale)


def subtract(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> ParamDict:
    """``a - b`` key by key (same keys)."""
    return {n: a[n] - b[n] for n in a}


class LocalBlockTraining:
    """K steps of AdamW (fresh state each round, no weight decay) on one block of a HF causal LM.

    ``mode="full"`` trains every parameter of the block's layers, ``"lora"`` the LoRA factors
    inside them (``fedcore.lora.inject_lora`` first, identically in every process). Everything
    else stays frozen, so autograd stops below the block (``fedcore.lora.train_blocks``).
    ``batches`` yields collated batches without end; ``eval_batches`` is the held-out data.
    """

    def __init__(
        self,
        model: nn.Module,
        batches: Iterator[dict[str, torch.Tensor]],
        *,
        mode: str = "full",
        layers_per_block: int = 1,
        steps: int = 5,
        lr: float = 1e-3,
        eval_batches: list[dict[str, torch.Tensor]] | None = None,
        num_samples: int = 1,
    ):
        if steps < 1 or lr <= 0:
            raise ValueError(f"need steps >= 1 and lr > 0, got steps={steps}, lr={lr}")
        self.model, self.batches, self.mode = model, batches, mode
        self.layers_per_block, self.steps, self.lr = layers_per_block, steps, lr
        self.eval_batches = eval_batches or []
        self.num_samples = num_samples
        n_blocks = len(group_blocks(model, layers_per_block))
        self.blocks = [train_blocks(model, [b], mode=mode, layers_per_block=layers_per_block) for b in range(n_blocks)]
        live = dict(model.named_parameters())
        self.params: ParamDict = {n: live[n] for names in self.blocks for n in names}
        self.device = next(model.parameters()).device
        model.requires_grad_(False)
        self.drawn = 0  # batches taken from ``batches`` so far

    def _next_batch(self) -> dict[str, torch.Tensor]:
        self.drawn += 1
        return {k: v.to(self.device, non_blocking=True) for k, v in next(self.batches).items()}

    @torch.no_grad()
    def load(self, params: Mapping[str, torch.Tensor], drawn: int) -> None:
        """Copy ``params`` into the live parameters (exactly the names of ``self.params``) and
        skip the stream forward to ``drawn`` batches (``ValueError`` if it is already past)."""
        if set(params) != set(self.params):
            raise ValueError(f"load needs exactly the {len(self.params)} block parameters, got {len(params)} names")
        if drawn < self.drawn:
            raise ValueError(f"the stream is at batch {self.drawn}, cannot go back to {drawn}")
        for name, p in self.params.items():
            p.copy_(params[name].to(device=p.device, dtype=p.dtype))
        for _ in range(drawn - self.drawn):
            next(self.batches)
        self.drawn = drawn

    def train_delta(self, block: int) -> tuple[ParamDict, float]:
        names = train_blocks(self.model, [block], mode=self.mode, layers_per_block=self.layers_per_block)
        start = snapshot(self.params, names)
        trainable = [self.params[n] for n in names]
        opt = torch.optim.AdamW(trainable, lr=self.lr, weight_decay=0.0)
        total = torch.zeros((), device=self.device)
        for _ in range(self.steps):
            loss = self.model(**self._next_batch()).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            total += loss.detach()
        self.model.requires_grad_(False)
        with torch.no_grad():
            delta = {n: self.params[n] - start[n] for n in names}
            for n in names:
                self.params[n].copy_(start[n])
        return delta, float(total) / self.steps  # one device sync per round, not per step

    def block_scores(self) -> list[float]:
        train_blocks(self.model, range(len(self.blocks)), mode=self.mode, layers_per_block=self.layers_per_block)
        self.model(**self._next_batch()).loss.backward()
        scores: list[float] = []
        for names in self.blocks:
            grads = [self.params[n].grad for n in names]
            scores.append(sum(float(g.pow(2).sum()) for g in grads if g is not None))
        for p in self.params.values():
            p.grad = None
        self.model.requires_grad_(False)
        return scores

    @torch.no_grad()
    def evaluate(self) -> float:
        if not self.eval_batches:
            return float("nan")
        losses = [float(self.model(**{k: v.to(self.device) for k, v in b.items()}).loss) for b in self.eval_batches]
        return sum(losses) / len(losses)
