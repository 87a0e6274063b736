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
from fedcore.lora import lora_parameters
from fedcore.model import blocks

from .config import FibecFedConfig
from .curriculum import batches_in_round
from .layers import aggregate_layer_scores, gal_rule, select_global_layers
from .local import build_setup, client_init, evaluate_state, layer_of, local_round
from .neurons import top_neurons


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


def run_fibecfed(config: FibecFedConfig) -> FibecFedResult:
    """Simulate ``config``; returns accuracy, uplink bytes and time per round, and the GAL."""
    c = config
    fedit = c.method == "fedit"
    rng = random.Random(c.seed)
    model, start_state, train, evals, sizes = build_setup(c)

    # ---- initialization
    t0 = time.perf_counter()
    n_layers = len(blocks(model))
    orders: list[list[int]] = []
    fisher_rows: list[dict[str, torch.Tensor]] = []
    layer_scores: list[torch.Tensor] = []
    if not fedit:
        for k in range(c.clients):
            scores, order, rows = client_init(model, start_state, train[k], c)
            layer_scores.append(scores)
            orders.append(order)
            fisher_rows.append(rows)
        gal = select_global_layers(aggregate_layer_scores(layer_scores, sizes), **gal_rule(c))
    else:
        gal = list(range(n_layers))
    init_seconds = time.perf_counter() - t0
    names = list(lora_parameters(model))
    gal_names = [n for n in names if layer_of(n) in gal]
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
            if fedit or not c.curriculum:
                order = rng.sample(range(len(train[k])), len(train[k]))
                count = len(order)
            else:
                order = orders[k]
                count = batches_in_round(t, c.rounds, sizes[k], c.batch_size, beta=c.beta, alpha=c.alpha, kind=c.pace)
            client_states[k] = local_round(model, state, [train[k][i] for i in order[:count]], masks[k], c)
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
            sums = [a + b for a, b in zip(sums, evaluate_state(model, state, evals[k]), strict=True)]
        result.accuracy.append(sums[0] / max(sums[1], 1))
        result.token_accuracy.append(sums[2] / max(sums[3], 1))
        result.eval_loss.append(sums[4] / max(sums[3], 1))
        result.uplink_bytes.append(uplink)
        result.round_seconds.append(time.perf_counter() - t1)
    result.extra = {"gal_names": len(gal_names), "lora_names": len(names), "client_sizes": sizes}
    return result
