"""What every algorithm builds the same way in each process: the clients' data shards and the
frozen tiny base model, both from seeds (a real deployment loads the same checkpoint and data)."""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from fedcore.config import DataConfig, ModelConfig
from fedcore.data import (
    CharTokenizer,
    batches,
    collate,
    dirichlet_partition,
    encode_example,
    iid_partition,
    make_instruction_task,
)
from fedcore.model.tiny import tiny_causal_lm


@dataclass
class ClientData:
    """One client's shard: encoded (input ids, labels) training pairs, collated eval batches, and
    how many training examples of each skill it holds."""

    train: list[tuple[list[int], list[int]]]
    eval_batches: list[dict[str, torch.Tensor]]
    skills: dict[str, int]


def client_datasets(dc: DataConfig, clients: int, batch_size: int, tokenizer: CharTokenizer) -> list[ClientData]:
    """``clients`` shards of the generated instruction task (``dc.partition``: IID or Dirichlet over
    skills), each encoded with a held-out part collated into eval batches of ``batch_size``."""
    n = clients
    pool = make_instruction_task(n * (dc.train_per_client + dc.eval_per_client), seed=dc.seed, skills=dc.skills)
    if dc.partition == "iid":
        parts = iid_partition(len(pool), n, seed=dc.seed)
    else:
        parts = dirichlet_partition(
            [ex.skill for ex in pool], n, alpha=dc.dirichlet_alpha, seed=dc.seed, min_per_client=8
        )
    out = []
    for idx in parts:
        examples = [pool[i] for i in idx]
        n_eval = max(1, min(dc.eval_per_client, len(examples) // 4))
        encoded = [encode_example(tokenizer, ex, max_len=dc.max_len) for ex in examples]
        eval_enc, train_enc = encoded[:n_eval], encoded[n_eval:]
        bs = batch_size
        eval_batches = [collate(eval_enc[i : i + bs], pad_id=tokenizer.pad_id) for i in range(0, len(eval_enc), bs)]
        skills: dict[str, int] = {}
        for ex in examples[n_eval:]:
            skills[ex.skill] = skills.get(ex.skill, 0) + 1
        out.append(ClientData(train=train_enc, eval_batches=eval_batches, skills=skills))
    return out


def shuffled_epochs(data: ClientData, batch_size: int, seed: int, pad_id: int) -> Iterator[dict]:
    """Batches of ``data.train``, reshuffled each epoch (seed ``seed + epoch``), without end."""
    epoch = 0
    while True:
        yield from batches(data.train, batch_size, seed=seed + epoch, pad_id=pad_id, shuffle=True)
        epoch += 1


def base_model(mc: ModelConfig, vocab_size: int) -> torch.nn.Module:
    """The random-weight causal LM of ``mc``, every parameter frozen (fp32, eval mode, on the CPU).
    ``vocab_size`` is the tokenizer's; ``mc.vocab_size``, when set, may only be larger. The last
    model built is kept and copied (initialising a 1B-parameter model on the CPU takes seconds)."""
    if mc.vocab_size and mc.vocab_size < vocab_size:
        raise ValueError(f"model.vocab_size {mc.vocab_size} is below the tokenizer's {vocab_size}")
    return copy.deepcopy(_built_model(tuple(sorted(dataclasses.asdict(mc).items())), mc.vocab_size or vocab_size))


@functools.lru_cache(maxsize=1)
def _built_model(fields: tuple, vocab_size: int) -> torch.nn.Module:
    mc = ModelConfig(**dict(fields))
    model = tiny_causal_lm(
        mc.family,
        vocab_size=vocab_size,
        hidden_size=mc.hidden_size,
        num_layers=mc.num_layers,
        num_heads=mc.num_heads,
        num_kv_heads=mc.num_kv_heads,
        seed=mc.seed,
        initializer_range=mc.init_std,
        **({"intermediate_size": mc.intermediate_size} if mc.intermediate_size else {}),
    )
    model.requires_grad_(False)
    return model
