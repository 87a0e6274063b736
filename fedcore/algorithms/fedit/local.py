"""What every FedIT process builds from the config, and one client's local work.

The frozen base is ``builders.base_model`` with LoRA in every decoder layer, injected on the CPU
right after ``torch.manual_seed(train.seed + 1)`` so that every process (server included) holds
bit-identical initial factors; only then is the model moved to ``train.device``. A LoRA state is
``{name: tensor}`` as ``fedcore.lora.lora_state`` names it (``...q_proj.lora_A`` (r, d_in),
``...lora_B`` (d_out, r)), fp32; the ones that travel are CPU tensors.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from torch import nn

from fedcore.lora import LoRALinear, inject_lora, load_lora_state, lora_parameters, lora_state
from fedcore.model import blocks

from ..builders import ClientData, base_model, client_datasets, tokenizer_of
from .config import FedITConfig

State = dict[str, torch.Tensor]
Batch = dict[str, torch.Tensor]


def build_model(config: FedITConfig, device: str | None = None) -> nn.Module:
    """The frozen base with fresh LoRA factors (A Kaiming-uniform, B zero: the base's output) on
    ``device`` (default ``config.train.device``). Seeds torch's global RNG: build roles before any
    of them trains."""
    model = base_model(config.model, tokenizer_of(config.model).vocab_size)
    torch.manual_seed(config.train.seed + 1)
    lc = config.lora
    inject_lora(list(blocks(model)), targets=lc.targets, r=lc.r, alpha=lc.alpha, dropout=lc.dropout)
    return model.to(device or config.train.device)


def initial_state(config: FedITConfig) -> State:
    """The global adapter before round 0 (CPU): the factors every client builds, too."""
    return lora_state(build_model(config, "cpu"))


def client_data(config: FedITConfig) -> list[ClientData]:
    """Every client's shard (train pairs, eval batches of ``train.batch_size``), from seeds."""
    return client_datasets(config.data, config.train.clients, config.train.batch_size, tokenizer_of(config.model))


class LocalTraining:
    """One client's model and data. ``batches`` yields collated CPU batches without end (input_ids,
    attention_mask, labels: int64 (B, T)) and continues across rounds; ``drawn`` counts the batches
    taken from it (the stream's position: all the cross-round state a client has); ``eval_batches``
    is the held-out data."""

    def __init__(self, model: nn.Module, batches: Iterator[Batch], eval_batches: list[Batch], config: FedITConfig):
        self.model, self.batches, self.eval_batches = model, batches, eval_batches
        self.steps, self.lr = config.train.local_steps, config.train.lr
        self.device = next(model.parameters()).device
        self.params = list(lora_parameters(model).values())
        self.lora_modules = [m for m in model.modules() if isinstance(m, LoRALinear)]
        self.drawn = 0

    def skip(self, n: int) -> None:
        """Draw ``n`` batches and throw them away (fast-forward the stream, e.g. on resume)."""
        if n < 0:
            raise ValueError(f"cannot skip {n} batches")
        next(itertools.islice(self.batches, n, n), None)
        self.drawn += n

    def next_batch(self) -> Batch:
        self.drawn += 1
        return next(self.batches)

    def _to_device(self, batch: Batch) -> Batch:
        return {k: v.to(self.device) for k, v in batch.items()}

    def train(self, state: State) -> tuple[State, float]:
        """Load ``state``, run ``steps`` AdamW steps (fresh optimizer, no weight decay) on the next
        batches; returns (the new LoRA state as CPU tensors, mean training loss in nats per label
        token over the steps). The base model stays in eval mode; only the LoRA modules train (their
        dropout, if any, draws from torch's global RNG: bit-identical runs need lora.dropout = 0)."""
        load_lora_state(self.model, state)
        for p in self.params:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(self.params, lr=self.lr, weight_decay=0.0)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for m in self.lora_modules:
            m.train(True)
        try:
            for _ in range(self.steps):
                loss = self.model(**self._to_device(self.next_batch())).loss
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                total += loss.detach().double()
        finally:
            for m in self.lora_modules:
                m.train(False)
        return {n: t.cpu() for n, t in lora_state(self.model).items()}, float(total) / self.steps

    @torch.no_grad()
    def evaluate(self, state: State) -> float:
        """Held-out loss under ``state``: each eval batch's HF causal-LM loss (mean over its label
        tokens, nats), averaged over the batches with equal weight; NaN without eval batches."""
        load_lora_state(self.model, state)
        if not self.eval_batches:
            return float("nan")
        losses = [float(self.model(**self._to_device(b)).loss) for b in self.eval_batches]
        return sum(losses) / len(losses)
