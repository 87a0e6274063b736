"""FibecFed's client-side work, shared by the in-process simulation and the transport roles:
building the (seeded) model and data, the initialization phase, one round of local training,
evaluation."""

from __future__ import annotations

import re
from typing import cast

import torch
from torch import nn
from transformers import PreTrainedModel

from fedcore.data import collate, dirichlet_partition, encode_example, make_instruction_task
from fedcore.fisher import FisherAccumulator
from fedcore.lora import inject_lora, load_lora_state, lora_parameters, lora_state
from fedcore.model import blocks

from ..builders import base_model, client_datasets, tokenizer_of
from .config import FibecFedConfig
from .curriculum import order_by_difficulty
from .layers import layer_output_sensitivity
from .neurons import NeuronMask

Batch = dict[str, torch.Tensor]
State = dict[str, torch.Tensor]


_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|h)\.(\d+)\.")


def layer_of(name: str) -> int:
    """The decoder layer index in a LoRA parameter's name (``...layers.<i>....``, or GPT-2 and
    Falcon's ``...h.<i>....``)."""
    found = _LAYER_INDEX.search(name)
    if found is None:
        raise ValueError(f"{name!r} is not inside a decoder layer")
    return int(found.group(1))


def build_setup(c: FibecFedConfig) -> tuple[PreTrainedModel, State, list[list[Batch]], list[Batch], list[int]]:
    """(model with LoRA on q and v, its initial LoRA state, each client's training batches, each
    client's evaluation batch, each client's example count n_k). Identical in every process for
    the same config (seeded). The model and tokenizer come from ``builders`` (tiny or a
    checkpoint); the data is the generated task (``samples_per_client`` on average per client,
    one sixth held out) or ``data.path``'s rows partitioned by ``builders.client_datasets``."""
    tok = tokenizer_of(c.model)
    model = cast(PreTrainedModel, base_model(c.model, tok.vocab_size))
    torch.manual_seed(c.seed)  # after the base: the LoRA factors do not depend on how it was built
    inject_lora(blocks(model), targets=["q", "v"], r=c.lora_r, alpha=2.0 * c.lora_r)
    nn.Module.to(model, c.device)  # (transformers types its own .to for dtypes only)
    start_state = {k: v.clone() for k, v in lora_state(model).items()}
    d = c.data
    if d.path:
        shards = client_datasets(d, c.clients, c.batch_size, tok)
        encoded = [(data.train, data.held_out) for data in shards]
    else:
        pool = make_instruction_task(c.clients * (c.samples_per_client + 4), seed=d.seed, skills=d.skills)
        parts = dirichlet_partition([ex.skill for ex in pool], c.clients, alpha=d.dirichlet_alpha, seed=d.seed,
                                    min_per_client=8)  # fmt: skip
        encoded = []
        for idx in parts:
            enc = [encode_example(tok, pool[i], max_len=d.max_len) for i in idx]
            n_eval = max(1, len(enc) // 6)
            encoded.append((enc[n_eval:], enc[:n_eval]))
    train, evals = [], []
    for rest, held in encoded:
        evals.append(_to(collate(held, pad_id=tok.pad_id), c.device))
        train.append(
            [
                _to(collate(rest[i : i + c.batch_size], pad_id=tok.pad_id), c.device)
                for i in range(0, len(rest), c.batch_size)
            ]
        )
    return model, start_state, train, evals, [len(rest) + len(held) for rest, held in encoded]


def _to(batch: Batch, device: str) -> Batch:
    return batch if device == "cpu" else {k: v.to(device) for k, v in batch.items()}


def client_init(
    model: PreTrainedModel, start_state: State, batches: list[Batch], c: FibecFedConfig
) -> tuple[torch.Tensor, list[int], State]:
    """The initialization phase on one client, from the common initial adapter: (layer
    sensitivity (L,) averaged over its batches, batch order easiest first by the Fisher trace of
    the first epoch, Fisher row sums with momentum per LoRA weight after ``fisher_epochs``)."""
    load_lora_state(model, start_state)
    layers = blocks(model)
    sens = [layer_output_sensitivity(model, layers, b, gamma=c.gamma) for b in batches]
    scores = torch.stack(sens).mean(0)
    # the first T' epochs of local training, with the Fisher statistics collected on the way;
    # the client then restarts from the common initial state (FedIT gets no such warm-up)
    acc = FisherAccumulator(model, target="lora", stats=("trace", "rowsum"), grad_scale=c.batch_size)
    opt = torch.optim.AdamW(lora_parameters(model).values(), lr=c.lr, weight_decay=0.0)
    difficulty = []
    for epoch in range(max(1, c.fisher_epochs)):
        for batch in batches:
            model(**batch).loss.backward()
            if epoch == 0:
                assert acc.scores is not None
                difficulty.append(float(acc.scores.sum()))
            acc.commit()
            opt.step()
            opt.zero_grad(set_to_none=True)
    acc.remove()
    return scores, order_by_difficulty(difficulty), {n: v.clone() for n, v in acc.fisher_rowsum.items()}


def local_round(
    model: torch.nn.Module, state: State, batches: list[Batch], masks: dict[str, torch.Tensor], c: FibecFedConfig
) -> State:
    """One pass of AdamW over ``batches`` from LoRA ``state`` with the rows outside ``masks`` (per
    LoRA weight: the rows to update) frozen by gradient masking; returns the new LoRA state."""
    load_lora_state(model, state)
    opt = torch.optim.AdamW(lora_parameters(model).values(), lr=c.lr, weight_decay=0.0)
    mask = NeuronMask(model, masks) if masks else None
    for batch in batches:
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    if mask is not None:
        mask.remove()
    return {n: v.clone() for n, v in lora_state(model).items()}


def evaluate_state(model: torch.nn.Module, state: State, batch: Batch) -> tuple[int, int, int, int, float]:
    """With LoRA ``state`` loaded: (exact answers, answers, correct answer tokens, answer tokens,
    summed token loss) on ``batch`` under teacher forcing."""
    load_lora_state(model, state)
    with torch.no_grad():
        out = model(**batch)
    pred, target = out.logits[:, :-1].argmax(-1), batch["labels"][:, 1:]
    scored = target != -100
    ok = ((pred == target) | ~scored).all(dim=1) & scored.any(dim=1)
    tokens = int(scored.sum())
    hits = int(((pred == target) & scored).sum())
    return int(ok.sum()), int(scored.any(dim=1).sum()), hits, tokens, float(out.loss) * tokens
