"""Sequential split fine-tuning (FL-GLM / FedSEA-LLaMA) of N clients in one process.

Every client holds its own head and tail (with LoRA), optimizer, LR schedule and noise stream; the
server holds one body (with LoRA). Each round the clients train in turn for ``local_steps``
steps; then the clients' head/tail LoRA is averaged with FedAvg (weighted by samples). The
transport issue runs the same steps across processes; here the hand-offs are counted, not sent.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from fedcore.accounting import ByteMeter
from fedcore.aggregate import weighted_average
from fedcore.data import (
    CharTokenizer,
    batches,
    collate,
    dirichlet_partition,
    encode_example,
    iid_partition,
    make_instruction_task,
)
from fedcore.lora import inject_lora, load_lora_state, lora_parameters, lora_state
from fedcore.model import split_model
from fedcore.model.tiny import tiny_causal_lm
from fedcore.runtime.config import RunConfig

from .step import ClientParts, ServerParts, split_eval_loss, split_train_step

WARMUP_STEPS = 10  # linear warm-up, then cosine decay to 10% of lr, per optimizer


def _schedule(opt: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < WARMUP_STEPS:
            return (step + 1) / WARMUP_STEPS
        progress = min(1.0, (step - WARMUP_STEPS) / max(1, total_steps - WARMUP_STEPS))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


@dataclass
class ClientData:
    train: list[tuple[list[int], list[int]]]
    eval_batches: list[dict[str, torch.Tensor]]
    skills: dict[str, int]


@dataclass
class StepRecord:
    round: int
    client: int
    step: int  # global step, 0-based
    loss: float
    tokens: int
    seconds: float


@dataclass
class SplitRunResult:
    """What a run measured: eval losses, per-step records, bytes per direction, timings."""

    eval_start: list[float]
    eval_end: list[float]
    steps: list[StepRecord]
    wire_bytes: dict[str, int]
    wire_messages: dict[str, int]
    train_seconds: float
    tokens: int
    client_sizes: list[int]
    extra: dict[str, Any] = field(default_factory=dict)

    def tokens_per_second(self, client: int | None = None) -> float:
        recs = [s for s in self.steps if client is None or s.client == client]
        secs = sum(s.seconds for s in recs)
        return sum(s.tokens for s in recs) / secs if secs > 0 else 0.0


def build_client_data(config: RunConfig, tokenizer: CharTokenizer) -> list[ClientData]:
    """Generate the task, partition it over clients (IID or Dirichlet over skills), encode it."""
    dc, n = config.data, config.train.clients
    pool = make_instruction_task(n * (dc.train_per_client + dc.eval_per_client), seed=dc.seed, skills=dc.skills)
    if dc.partition == "iid":
        parts = iid_partition(len(pool), n, seed=dc.seed)
    else:
        parts = dirichlet_partition(
            [ex.skill for ex in pool], n, alpha=dc.dirichlet_alpha, seed=dc.seed, min_per_client=8
        )
    clients = []
    for idx in parts:
        examples = [pool[i] for i in idx]
        n_eval = max(1, min(dc.eval_per_client, len(examples) // 4))
        encoded = [encode_example(tokenizer, ex, max_len=dc.max_len) for ex in examples]
        eval_enc, train_enc = encoded[:n_eval], encoded[n_eval:]
        eval_batches = [
            collate(eval_enc[i : i + config.train.batch_size], pad_id=tokenizer.pad_id)
            for i in range(0, len(eval_enc), config.train.batch_size)
        ]
        skills: dict[str, int] = {}
        for ex in examples[n_eval:]:
            skills[ex.skill] = skills.get(ex.skill, 0) + 1
        clients.append(ClientData(train=train_enc, eval_batches=eval_batches, skills=skills))
    return clients


def _endless(data: ClientData, batch_size: int, seed: int, pad_id: int) -> Iterator[dict[str, torch.Tensor]]:
    epoch = 0
    while True:
        yield from batches(data.train, batch_size, seed=seed + epoch, pad_id=pad_id, shuffle=True)
        epoch += 1


def run_split_inprocess(config: RunConfig, *, on_step: Callable[[StepRecord], None] | None = None) -> SplitRunResult:
    """Run ``config`` end to end in this process and return what it measured."""
    mc, tc, lc = config.model, config.train, config.lora
    torch.manual_seed(tc.seed)
    tokenizer = CharTokenizer()
    data = build_client_data(config, tokenizer)
    model = tiny_causal_lm(
        mc.family,
        vocab_size=tokenizer.vocab_size,
        hidden_size=mc.hidden_size,
        num_layers=mc.num_layers,
        num_heads=mc.num_heads,
        num_kv_heads=mc.num_kv_heads,
        seed=mc.seed,
        initializer_range=mc.init_std,
    )
    for p in model.parameters():
        p.requires_grad_(False)
    sm = split_model(model, config.split.blocks_a, config.split.blocks_c)
    add_lora = functools.partial(inject_lora, targets=lc.targets, r=lc.r, alpha=lc.alpha, dropout=lc.dropout)
    steps_per_client = tc.rounds * tc.local_steps

    add_lora(sm.body.layers)
    body_opt = torch.optim.AdamW(lora_parameters(sm.body).values(), lr=tc.lr, weight_decay=0.0)
    server = ServerParts(sm.body, body_opt, _schedule(body_opt, steps_per_client * tc.clients))

    clients: list[ClientParts] = []
    for k in range(tc.clients):
        head, tail = copy.deepcopy((sm.head, sm.tail))  # one copy per client; tied weights stay tied
        if len(head.layers):
            add_lora(head.layers)
        if len(tail.layers):
            add_lora(tail.layers)
        params = [*lora_parameters(head).values(), *lora_parameters(tail).values()]
        opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=0.0)
        gen = torch.Generator().manual_seed(tc.seed * 1000 + k)  # a distinct noise stream per client
        clients.append(ClientParts(head, tail, opt, _schedule(opt, steps_per_client), gen))
    _average_clients(clients, data)  # every client starts from the same adapter

    def evaluate() -> list[float]:
        return [split_eval_loss(c.head, sm.body, c.tail, d.eval_batches) for c, d in zip(clients, data, strict=False)]

    eval_start = evaluate()
    meter, records = ByteMeter(), []
    streams = [_endless(d, tc.batch_size, tc.seed + 7919 * k, tokenizer.pad_id) for k, d in enumerate(data)]
    global_step, t_train = 0, 0.0
    for rnd in range(tc.rounds):
        for k, client in enumerate(clients):  # sequential mode: one client at a time
            for _ in range(tc.local_steps):
                batch = next(streams[k])
                t0 = time.perf_counter()
                loss = split_train_step(
                    client, server, batch, noise_std=config.noise.std, noise_relative=config.noise.relative, meter=meter
                )
                dt = time.perf_counter() - t0
                t_train += dt
                rec = StepRecord(rnd, k, global_step, loss, int(batch["attention_mask"].sum()), dt)
                records.append(rec)
                global_step += 1
                if on_step is not None:
                    on_step(rec)
        _average_clients(clients, data)
    return SplitRunResult(
        eval_start=eval_start,
        eval_end=evaluate(),
        steps=records,
        wire_bytes=meter.snapshot(),
        wire_messages=dict(meter.messages),
        train_seconds=t_train,
        tokens=sum(r.tokens for r in records),
        client_sizes=[len(d.train) for d in data],
        extra={"skills": [d.skills for d in data]},
    )


def _average_clients(clients: list[ClientParts], data: list[ClientData]) -> None:
    """FedAvg of the clients' head and tail LoRA, weighted by training samples."""
    weights = [len(d.train) for d in data]
    for part in ("head", "tail"):
        avg = weighted_average([lora_state(getattr(c, part)) for c in clients], weights)
        for c in clients:
            load_lora_state(getattr(c, part), avg)
