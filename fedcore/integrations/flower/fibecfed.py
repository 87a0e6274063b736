"""FibecFed as a Flower strategy and ClientApp.

The ServerApp maps nodes to shards, then runs FibecFed's initialization phase as queries:
``query.fedcore_fibecfed_init`` makes each node compute its layer sensitivities, difficulty
order and Fisher row sums (``local.client_init``) and return the sensitivities (L,); the server
aggregates them weighted by the clients' example counts and picks the global aggregation layers
(GAL, ``select_global_layers`` with the config's rule); ``query.fedcore_fibecfed_gal`` sends the
GAL down, and each node builds its neuron masks for its local layers. Then ``FibecFedStrategy``
runs the rounds: each of ``per_round`` sampled clients gets the global GAL parameters, trains its
curriculum batches of round t with its neuron masks and uploads only the GAL parameters, which are
checked (``fedcore.aggregate.mismatch``) and averaged weighted by example counts; the first
``eval_clients`` clients are evaluated after every round. The sampler and every client's work are
FibecFed's own (``roles.FibecFedClient``, seeded as there), so the run gives ``fedcore run``'s
numbers. ``method = "fedit"`` in a FibecFed config skips the init phase (every layer in the GAL).

A node's state across messages (its whole LoRA, its Fisher row sums, its batch order, its RNG and
the GAL) lives in ``context.state`` (``fedcore.fibecfed``), in the format of the role's resume
``save``, since a SuperNode may start a fresh process per message.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Iterable
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy

from fedcore.aggregate import mismatch, weighted_average
from fedcore.algorithms.fibecfed.config import FibecFedConfig
from fedcore.algorithms.fibecfed.layers import aggregate_layer_scores, gal_rule, select_global_layers
from fedcore.algorithms.fibecfed.local import State, build_setup, client_init, evaluate_state, layer_of
from fedcore.algorithms.fibecfed.roles import FibecFedClient, RoleRunResult

from .config import config_from_run_config
from .local import built, hello_reply, node_client, saved
from .nodes import NodeMap, map_nodes
from .outputs import Outcome, finish_run
from .records import ARRAYS, CONFIG, METRICS, arrays_of, as_int, reply_problem, sender, state_of

log = logging.getLogger("fedcore.flower")

INIT, GAL, SAVE = "query.fedcore_fibecfed_init", "query.fedcore_fibecfed_gal", "query.fedcore_fibecfed_save"
KEPT, META = "fedcore.fibecfed", "fedcore.fibecfed.meta"  # context.state: the role's tensors and the rest


class FibecFedStrategy(Strategy):
    """FibecFed's rounds for ``FibecFedConfig`` (see the module docstring); ``init_phase`` first."""

    def __init__(self, config: FibecFedConfig, nodes: NodeMap, start_state: State, *, timeout_s: float = 600.0):
        self.c, self.nodes, self.timeout_s = config, nodes, timeout_s
        self.start_state = start_state
        self.rng = random.Random(config.seed)  # as FibecFedServer's
        self.t0 = time.perf_counter()
        self.result = RoleRunResult(global_layers=[], init_seconds=0.0)
        self.global_state: State = {}
        self.round_t0 = 0.0

    def summary(self) -> None:
        log.info("FibecFed: GAL %s, %d clients, %d per round", self.result.global_layers, self.c.clients,
                 self.c.per_round)  # fmt: skip

    def weight(self, k: int) -> float:
        return float(self.nodes.samples[k])

    # ---- the initialization phase (queries), before Strategy.start
    def init_phase(self, grid: Grid) -> list[int]:
        """Layer scores up, the GAL down; returns the GAL."""
        n_layers = 1 + max(layer_of(name) for name in self.start_state)
        if self.c.method == "fedit":
            gal = list(range(n_layers))
        else:
            replies = self.ask(grid, INIT, self.nodes.indices(), RecordDict())
            scores: dict[int, torch.Tensor] = {}
            for k, reply in replies.items():
                arrays = reply.content.array_records.get(ARRAYS)
                vector = state_of(arrays).get("scores") if arrays is not None else None
                if not _finite_vector(vector, n_layers):
                    log.warning("fibecfed: client %d left out of the GAL choice: no usable layer scores", k)
                    continue
                scores[k] = vector  # type: ignore[assignment]
            if not scores:
                raise RuntimeError("no client sent usable layer scores")
            ok = sorted(scores)
            aggregated = aggregate_layer_scores([scores[k] for k in ok], [self.nodes.samples[k] for k in ok])
            gal = select_global_layers(aggregated, **gal_rule(self.c))
        content = RecordDict({CONFIG: ConfigRecord({"layers": gal})})
        self.ask(grid, GAL, self.nodes.indices(), content)
        self.result.global_layers = gal
        self.result.init_seconds = time.perf_counter() - self.t0
        self.global_state = {k: v.clone() for k, v in self.start_state.items() if layer_of(k) in gal}
        return gal

    def ask(self, grid: Grid, kind: str, clients: list[int], content: RecordDict) -> dict[int, Message]:
        """``kind`` to each of ``clients``; client index -> its good reply (the others are logged)."""
        asked = [Message(content=content, dst_node_id=self.nodes.node[k], message_type=kind) for k in clients]
        out: dict[int, Message] = {}
        for reply in grid.send_and_receive(asked, timeout=self.timeout_s):
            k = self.nodes.client.get(sender(reply))
            if k is None or reply.has_error():
                log.warning("fibecfed: %s: node %d: %s", kind, sender(reply), reply.error.reason if k else "unknown")
                continue
            out[k] = reply
        return out

    # ---- rounds
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.round_t0 = time.perf_counter()
        alive = self.nodes.indices()
        sampled = sorted(self.rng.sample(alive, min(self.c.per_round, len(alive))))
        content = RecordDict({ARRAYS: arrays_of(self.global_state), CONFIG: ConfigRecord({"round": server_round - 1})})
        return [
            Message(content=content, message_type=MessageType.TRAIN, dst_node_id=self.nodes.node[k]) for k in sampled
        ]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        kept: dict[int, State] = {}
        for reply in replies:
            k = self.nodes.client.get(sender(reply))
            why = reply_problem(reply, arrays=True, need=())
            upload = state_of(reply.content.array_records[ARRAYS]) if why is None else {}
            why = why or mismatch(upload, self.global_state)
            if k is None or why is not None:
                log.warning("fibecfed: round %d: node %d left out: %s", server_round - 1, sender(reply), why)
                continue
            kept[k] = upload
        order = sorted(kept)
        if order:
            self.global_state = weighted_average([kept[k] for k in order], [self.weight(k) for k in order])
        self.result.uplink_bytes.append(sum(p.numel() * p.element_size() for k in order for p in kept[k].values()))
        return arrays_of(self.global_state), MetricRecord({"clients": len(order)})

    def evaluated(self) -> list[int]:
        return [k for k in range(min(self.c.eval_clients, self.c.clients)) if k in self.nodes.node]

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        content = RecordDict({ARRAYS: arrays_of(self.global_state), CONFIG: ConfigRecord({"round": server_round - 1})})
        return [
            Message(content=content, message_type=MessageType.EVALUATE, dst_node_id=self.nodes.node[k])
            for k in self.evaluated()
        ]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        counts = []
        for reply in replies:
            why = reply_problem(reply, arrays=False, need=())
            value = reply.content.metric_records[METRICS].get("counts") if why is None else None
            if isinstance(value, list) and len(value) == 5 and all(isinstance(v, int | float) for v in value):
                counts.append(value)
            else:
                log.warning("fibecfed: round %d: node %d's evaluation left out", server_round - 1, sender(reply))
        sums = [sum(x[i] for x in counts) for i in range(5)]
        r = self.result
        r.accuracy.append(sums[0] / max(sums[1], 1))
        r.token_accuracy.append(sums[2] / max(sums[3], 1))
        r.eval_loss.append(sums[4] / sums[3] if sums[3] else math.nan)
        r.round_seconds.append(time.perf_counter() - self.round_t0)
        return MetricRecord({"eval_loss": r.eval_loss[-1], "token_accuracy": r.token_accuracy[-1]})

    def finish(self, grid: Grid) -> RoleRunResult:
        """The result; with ``output.save_model``, each evaluated client's whole LoRA (``query.
        fedcore_fibecfed_save``: its local layers under the global GAL)."""
        r = self.result
        if self.c.output.save_model:
            for k, reply in self.ask(grid, SAVE, self.evaluated(), RecordDict()).items():
                arrays = reply.content.array_records.get(ARRAYS)
                if arrays is not None:
                    r.client_states[k] = {**state_of(arrays), **self.global_state}
        r.dropped = {k: "no Flower node serves this shard" for k in self.nodes.missing}
        r.final_state = self.global_state
        return r


def _finite_vector(t: Any, n: int) -> bool:
    return isinstance(t, torch.Tensor) and t.shape == (n,) and t.is_floating_point() and bool(torch.isfinite(t).all())


def fibecfed_server_app(config: FibecFedConfig | None = None, *, on_outcome: Outcome | None = None) -> ServerApp:
    """A ServerApp running FibecFed for ``config`` (default: the run's ``run_config``)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = config if config is not None else config_from_run_config(context.run_config)
        t0 = time.perf_counter()
        nodes = map_nodes(grid, cfg.clients, "fibecfed")
        _, start_state, _, _, _ = build_setup(cfg)
        strategy = FibecFedStrategy(cfg, nodes, start_state)
        strategy.init_phase(grid)
        strategy.start(grid, arrays_of(strategy.global_state), num_rounds=cfg.rounds)
        finish_run(cfg, strategy.finish(grid), {}, transport="flower", t0=t0, run_config=dict(context.run_config),
                   on_outcome=on_outcome)  # fmt: skip

    return app


class CapturedLink:
    """The link a ``FibecFedClient`` sends on inside a ClientApp: it keeps the last message."""

    def __init__(self) -> None:
        self.sent: tuple[dict[str, torch.Tensor], dict[str, Any]] = ({}, {})

    def send_to(self, peer: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any], **_: Any) -> None:
        self.sent = (dict(tensors), dict(meta))


class NodeRole:
    """A node's ``FibecFedClient`` and the number of messages of this run it has seen."""

    def __init__(self, config: FibecFedConfig, index: int):
        model, start_state, train, evals, sizes = build_setup(config)
        self.link = CapturedLink()
        self.client = FibecFedClient(self.link, model, start_state, train[index], evals[index], sizes[index],
                                     config, index=index)  # fmt: skip
        self.seen = 0

    def load(self, context: Context) -> FibecFedClient:
        """The client as this node left it after its last message (from ``context.state`` when this
        process did not serve that message)."""
        meta = saved(context, META)
        seen = as_int(meta.get("seen", 0), "seen")
        if seen != self.seen and seen > 0:
            info = json.loads(str(meta["role"]))
            self.client.restore(state_of(context.state.array_records[KEPT]), info)
        self.seen = seen
        return self.client

    def store(self, context: Context) -> None:
        """Put the client's state into ``context.state`` (the role's resume ``save`` format)."""
        self.client.save(-1)
        tensors, info = self.link.sent
        info["layers"] = saved(context, META).get("layers", [])
        context.state.array_records[KEPT] = arrays_of(tensors)
        meta = saved(context, META)
        meta["role"] = json.dumps(info)
        meta["seen"] = self.seen = self.seen + 1


def fibecfed_client_app(config: FibecFedConfig | None = None) -> ClientApp:
    """The FibecFed ClientApp for ``config`` (default: the run's ``run_config``)."""
    app = ClientApp()

    def role(context: Context) -> tuple[NodeRole, FibecFedClient]:
        cfg, k = node_client(context, config)
        node: NodeRole = built(cfg, k, NodeRole)
        return node, node.load(context)

    @app.query("fedcore_hello")
    def hello(msg: Message, context: Context) -> Message:
        node, client = role(context)
        return hello_reply(msg, client.index, client.size)

    @app.query("fedcore_fibecfed_init")
    def init(msg: Message, context: Context) -> Message:
        node, c = role(context)
        scores, c.order, c.rows = client_init(c.model, c.start_state, c.batches, c.c)
        node.store(context)
        return Message(RecordDict({ARRAYS: arrays_of({"scores": scores.cpu()})}), reply_to=msg)

    @app.query("fedcore_fibecfed_gal")
    def gal(msg: Message, context: Context) -> Message:
        node, client = role(context)
        layers = [as_int(x, "layers") for x in msg.content.config_records[CONFIG]["layers"]]  # type: ignore[union-attr]
        client.set_gal(layers)
        saved(context, META)["layers"] = layers
        node.store(context)
        return Message(RecordDict({METRICS: MetricRecord({"layers": len(layers)})}), reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        node, client = role(context)
        t = as_int(msg.content.config_records[CONFIG]["round"], "round")
        client.train_round(t, state_of(msg.content.array_records[ARRAYS]))
        upload, _ = node.link.sent
        node.store(context)
        return Message(RecordDict({ARRAYS: arrays_of(upload), METRICS: MetricRecord({"num-examples": client.size})}),
                       reply_to=msg)  # fmt: skip

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        node, client = role(context)
        counts = evaluate_state(client.model, {**client.state, **state_of(msg.content.array_records[ARRAYS])},
                                client.eval_batch)  # fmt: skip
        metrics = MetricRecord({"counts": [float(x) for x in counts], "num-examples": client.size})
        return Message(RecordDict({METRICS: metrics}), reply_to=msg)

    @app.query("fedcore_fibecfed_save")
    def save(msg: Message, context: Context) -> Message:
        node, client = role(context)
        return Message(RecordDict({ARRAYS: arrays_of({n: v.cpu() for n, v in client.state.items()})}), reply_to=msg)

    return app


__all__ = ["FibecFedStrategy", "fibecfed_client_app", "fibecfed_server_app"]
