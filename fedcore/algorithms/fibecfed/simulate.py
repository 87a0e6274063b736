"""FibecFed and its FedIT baseline as an in-process simulation of N clients (K sampled per round).

One frozen tiny Llama with LoRA in every layer is shared; each client keeps its own LoRA state
(its local layers persist across rounds) and the server the global aggregation layers' (GAL).

Initialization (every client, once, from the common initial adapter): layer sensitivity under an
adversarial embedding perturbation (``layer_output_sensitivity``), averaged over the client's
batches and then over clients weighted by n_k, GAL = the highest-scoring layers; then
``fisher_epochs`` epochs of local training that collect the Fisher statistics: batch difficulty =
sum over the batch's samples of the diagonal-Fisher trace of the LoRA parameters in the first
epoch (``FisherAccumulator.scores``), batches sorted easiest first; neuron scores = Fisher row sums
with momentum, the top ``rho`` rows of each non-GAL LoRA weight stay trainable. The client then
restarts from the common adapter, so FedIT and FibecFed begin round 0 from the same weights.

Round t: sample K clients; each loads the GAL parameters, trains one pass over its first B_k^t
curriculum batches with non-GAL rows masked, and uploads only the GAL parameters; the server
averages them weighted by n_k. FedIT = every layer in the GAL, all batches in random order, no
masks. Accuracy: exact match of the answer under teacher forcing (every answer token's argmax is
the target), over the evaluation clients' held-out examples, each with its own local layers.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import torch

from fedcore.aggregate import weighted_average
from fedcore.data import CharTokenizer, collate, dirichlet_partition, encode_example, make_instruction_task
from fedcore.fisher import FisherAccumulator
from fedcore.lora import inject_lora, load_lora_state, lora_parameters, lora_state
from fedcore.model.tiny import tiny_causal_lm

from .curriculum import batches_in_round, order_by_difficulty
from .layers import aggregate_layer_scores, layer_output_sensitivity, select_global_layers
from .neurons import NeuronMask, top_neurons


@dataclass(kw_only=True)
class FibecFedConfig:
    """One simulated run. ``method``: "fibecfed" or "fedit"; the three switches give the ablations."""

    method: str = "fibecfed"
    curriculum: bool = True
    gal_ratio: float = 0.75  # the paper's 18 of 24 layers
    neuron_selection: bool = True
    rho: float = 0.5
    fisher_epochs: int = 1
    beta: float = 0.6
    alpha: float = 0.8
    pace: str = "linear"
    gamma: float = 0.01
    clients: int = 100
    per_round: int = 10
    rounds: int = 20
    samples_per_client: int = 24
    eval_clients: int = 10
    batch_size: int = 8
    lr: float = 0.01
    lora_r: int = 8
    layers: int = 4
    hidden: int = 64
    dirichlet_alpha: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("fibecfed", "fedit"):
            raise ValueError(f"method must be 'fibecfed' or 'fedit', got {self.method!r}")
        if not 0 < self.per_round <= self.clients or not 0 < self.eval_clients <= self.clients:
            raise ValueError("need 0 < per_round <= clients and 0 < eval_clients <= clients")
        if not 0.0 <= self.gal_ratio <= 1.0 or not 0.0 <= self.rho <= 1.0:
            raise ValueError("gal_ratio and rho must be in [0, 1]")


@dataclass
class FibecFedResult:
    """Per round: exact-match accuracy, answer-token accuracy, eval loss (nats per answer token),
    uplink bytes (the sampled clients' GAL uploads) and seconds; the init phase's seconds; the GAL."""

    accuracy: list[float]
    uplink_bytes: list[int]
    round_seconds: list[float]
    init_seconds: float
    global_layers: list[int]
    token_accuracy: list[float] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def _layer_of(name: str) -> int:
    return int(name.split("layers.")[1].split(".")[0])


def _evaluate(model, batch) -> tuple[int, int, int, int, float]:
    """(exact answers, answers, correct answer tokens, answer tokens, summed token loss)."""
    with torch.no_grad():
        out = model(**batch)
    pred, target = out.logits[:, :-1].argmax(-1), batch["labels"][:, 1:]
    scored = target != -100
    ok = ((pred == target) | ~scored).all(dim=1) & scored.any(dim=1)
    tokens = int(scored.sum())
    hits = int(((pred == target) & scored).sum())
    return int(ok.sum()), int(scored.any(dim=1).sum()), hits, tokens, float(out.loss) * tokens


def run_fibecfed(config: FibecFedConfig) -> FibecFedResult:
    """Simulate ``config``; returns accuracy, uplink bytes and time per round, and the GAL."""
    c = config
    fedit = c.method == "fedit"
    rng = random.Random(c.seed)
    torch.manual_seed(c.seed)
    tok = CharTokenizer()
    model = tiny_causal_lm("llama", vocab_size=tok.vocab_size, hidden_size=c.hidden, num_layers=c.layers,
                           seed=c.seed, initializer_range=0.1)  # fmt: skip
    model.requires_grad_(False)
    inject_lora(model.model.layers, targets=["q", "v"], r=c.lora_r, alpha=2.0 * c.lora_r)
    start_state = {k: v.clone() for k, v in lora_state(model).items()}
    pool = make_instruction_task(c.clients * (c.samples_per_client + 4), seed=c.seed)
    parts = dirichlet_partition([ex.skill for ex in pool], c.clients, alpha=c.dirichlet_alpha, seed=c.seed,
                                min_per_client=8)  # fmt: skip
    train, evals = [], []
    for idx in parts:
        enc = [encode_example(tok, pool[i], max_len=48) for i in idx]
        n_eval = max(1, len(enc) // 6)
        evals.append(collate(enc[:n_eval], pad_id=tok.pad_id))
        rest = enc[n_eval:]
        train.append(
            [collate(rest[i : i + c.batch_size], pad_id=tok.pad_id) for i in range(0, len(rest), c.batch_size)]
        )
    sizes = [len(parts[k]) for k in range(c.clients)]

    # ---- initialization
    t0 = time.perf_counter()
    n_layers = len(model.model.layers)
    orders: list[list[int]] = []
    fisher_rows: list[dict[str, torch.Tensor]] = []
    layer_scores: list[torch.Tensor] = []
    if not fedit:
        for k in range(c.clients):
            load_lora_state(model, start_state)
            sens = [layer_output_sensitivity(model, model.model.layers, b, gamma=c.gamma) for b in train[k]]
            layer_scores.append(torch.stack(sens).mean(0))
            # the first T' epochs of local training, with the Fisher statistics collected on the way;
            # the client then restarts from the common initial state (FedIT gets no such warm-up)
            acc = FisherAccumulator(model, target="lora", stats=("trace", "rowsum"), grad_scale=c.batch_size)
            opt = torch.optim.AdamW(lora_parameters(model).values(), lr=c.lr, weight_decay=0.0)
            difficulty = []
            for epoch in range(max(1, c.fisher_epochs)):
                for batch in train[k]:
                    model(**batch).loss.backward()
                    if epoch == 0:
                        assert acc.scores is not None
                        difficulty.append(float(acc.scores.sum()))
                    acc.commit()
                    opt.step()
                    opt.zero_grad(set_to_none=True)
            acc.remove()
            orders.append(order_by_difficulty(difficulty))
            fisher_rows.append({n: v.clone() for n, v in acc.fisher_rowsum.items()})
        gal = select_global_layers(aggregate_layer_scores(layer_scores, sizes), ratio=c.gal_ratio)
    else:
        gal = list(range(n_layers))
    init_seconds = time.perf_counter() - t0
    names = list(lora_parameters(model))
    gal_names = [n for n in names if _layer_of(n) in gal]
    masks: list[dict[str, torch.Tensor]] = []
    for k in range(c.clients):
        if fedit or not c.neuron_selection:
            masks.append({})
        else:
            masks.append({n: top_neurons(rows, c.rho) for n, rows in fisher_rows[k].items() if n not in gal_names})
    client_states = [dict(start_state) for _ in range(c.clients)]
    global_state = {n: start_state[n].clone() for n in gal_names}

    # ---- rounds
    result = FibecFedResult(
        accuracy=[], uplink_bytes=[], round_seconds=[], init_seconds=init_seconds, global_layers=gal
    )
    for t in range(c.rounds):
        t1 = time.perf_counter()
        sampled = rng.sample(range(c.clients), c.per_round)
        uploads, weights, uplink = [], [], 0
        for k in sampled:
            state = dict(client_states[k])
            state.update(global_state)
            load_lora_state(model, state)
            if fedit or not c.curriculum:
                order = rng.sample(range(len(train[k])), len(train[k]))
                count = len(order)
            else:
                order = orders[k]
                count = batches_in_round(t, c.rounds, sizes[k], c.batch_size, beta=c.beta, alpha=c.alpha, kind=c.pace)
            opt = torch.optim.AdamW(lora_parameters(model).values(), lr=c.lr, weight_decay=0.0)
            mask = NeuronMask(model, masks[k]) if masks[k] else None
            for i in order[:count]:
                model(**train[k][i]).loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            if mask is not None:
                mask.remove()
            client_states[k] = {n: v.clone() for n, v in lora_state(model).items()}
            up = {n: client_states[k][n] for n in gal_names}
            uplink += sum(v.numel() * v.element_size() for v in up.values())
            uploads.append(up)
            weights.append(float(sizes[k]))
        if uploads:
            global_state = weighted_average(uploads, weights)
        sums = [0, 0, 0, 0, 0.0]
        for k in range(c.eval_clients):
            state = dict(client_states[k])
            state.update(global_state)
            load_lora_state(model, state)
            sums = [a + b for a, b in zip(sums, _evaluate(model, evals[k]), strict=True)]
        result.accuracy.append(sums[0] / max(sums[1], 1))
        result.token_accuracy.append(sums[2] / max(sums[3], 1))
        result.eval_loss.append(sums[4] / max(sums[3], 1))
        result.uplink_bytes.append(uplink)
        result.round_seconds.append(time.perf_counter() - t1)
    result.extra = {"gal_names": len(gal_names), "lora_names": len(names), "client_sizes": sizes}
    return result
