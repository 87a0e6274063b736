"""FedIT (LoRA FedAvg) as a Flower strategy and ClientApp.

``FedITStrategy`` is Flower's ``FedAvg`` with fedcore's round: it maps nodes to shards first
(``nodes.map_nodes``), samples fedcore's way (``fedit.roles.sample_clients`` with the same seed),
tells each node where its batch stream stands (``fedcore.steps``), runs fedcore's upload check
(``fedcore.aggregate.mismatch``, a finite loss, a positive example count) on every reply before
anything is averaged, and averages the accepted adapters with ``fedcore.aggregate.weighted_average``
in client order. A node that fails, times out or sends a bad reply is left out of that round with a
logged reason; the run goes on. With ``participation = 1`` (and ``lora.dropout = 0``) its per-round
training losses and final held-out losses are those of ``fedcore run`` on the same config.

``fedit_client_app`` is the client side. It also serves Flower's own strategies (FedMedian, Krum,
FedAdam, the DP wrappers ...): its updates are plain arrays under ``arrays``, its weight is
``num-examples``, and without ``fedcore.steps`` in the message it keeps its stream position in
``context.state``.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, Strategy

from fedcore.aggregate import mismatch, weighted_average
from fedcore.algorithms.fedit.config import FedITConfig
from fedcore.algorithms.fedit.local import initial_state
from fedcore.algorithms.fedit.roles import FedITClient, FedITResult, sample_clients

from .local import built, hello_reply, node_client, saved
from .nodes import HELLO, NodeMap, map_nodes
from .outputs import Outcome, finish_run
from .records import ARRAYS, CONFIG, METRICS, State, arrays_of, as_int, nbytes, number, reply_problem, sender, state_of

log = logging.getLogger("fedcore.flower")

STEPS = "fedcore.steps"  # a train message's key: batches this client's stream has given before


@dataclass
class RoundLog:
    """What the strategy saw, per round: the mean training loss of the accepted clients (NaN:
    none), the sampled and accepted client indices, the payload bytes each way; per client, the
    held-out loss after each evaluation (``evals[r][k]``; r = 0 before training)."""

    round_loss: list[float] = field(default_factory=list)
    participants: list[list[int]] = field(default_factory=list)
    included: list[list[int]] = field(default_factory=list)
    upload_bytes: list[int] = field(default_factory=list)
    download_bytes: list[int] = field(default_factory=list)
    evals: dict[int, dict[int, float]] = field(default_factory=dict)
    left_out: list[tuple[int, int, str]] = field(default_factory=list)  # (round, client or node, why)


class FedITStrategy(FedAvg):
    """LoRA FedAvg for fedcore's ``FedITConfig`` (see the module docstring). ``log`` holds the
    rounds as they went; ``result()`` the run as a ``FedITResult`` (fedcore's own report reads it)."""

    def __init__(
        self, config: FedITConfig, *, node_timeout_s: float = 600.0, evaluate_every_round: bool = False, **fedavg: Any
    ):
        n = config.train.clients
        fedavg.setdefault("min_available_nodes", n)
        super().__init__(fraction_train=config.participation, min_train_nodes=1, min_evaluate_nodes=1, **fedavg)
        self.config, self.node_timeout_s, self.every_round = config, node_timeout_s, evaluate_every_round
        self.rng = random.Random(config.train.seed + 17)  # fedcore's sampler, seeded as FedITServer's
        self.nodes: NodeMap | None = None
        self.steps = [0] * n
        self.current: State = {}  # the global adapter the latest round started from
        self.log = RoundLog()
        self.t0 = time.perf_counter()

    # ---- the round
    def node_map(self, grid: Grid) -> NodeMap:
        if self.nodes is None:
            self.nodes = map_nodes(grid, self.config.train.clients, "fedit", timeout_s=self.node_timeout_s)
        return self.nodes

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        nodes = self.node_map(grid)
        self.current = state_of(arrays)
        sampled = sample_clients(nodes.indices(), self.config.participation, self.rng)
        messages = []
        for k in sampled:
            conf = ConfigRecord({**config, "server-round": server_round, STEPS: self.steps[k]})
            content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: conf})
            messages.append(Message(content=content, message_type=MessageType.TRAIN, dst_node_id=nodes.node[k]))
            self.steps[k] += self.config.train.local_steps
        self.log.participants.append(sampled)
        self.log.download_bytes.append(nbytes(arrays) * len(sampled))
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        accepted: dict[int, tuple[State, float, float]] = {}
        received = 0
        for reply in replies:
            k, why = self.check_reply(reply)
            if k is None or why is not None:
                self.leave_out(server_round, k if k is not None else sender(reply), why or "unknown node")
                continue
            content = reply.content
            received += nbytes(content.array_records[self.arrayrecord_key])
            metrics = content.metric_records[METRICS]
            state = state_of(content.array_records[self.arrayrecord_key])
            accepted[k] = (state, number(metrics, "num-examples") or 0.0, number(metrics, "train_loss") or 0.0)
        included = sorted(accepted)
        self.log.included.append(included)
        self.log.upload_bytes.append(received)
        if not included:
            self.log.round_loss.append(math.nan)
            return None, None
        weights = [accepted[k][1] if self.config.weight_by_samples else 1.0 for k in included]
        loss = sum(w * accepted[k][2] for w, k in zip(weights, included, strict=True)) / sum(weights)
        self.log.round_loss.append(loss)
        average = weighted_average([accepted[k][0] for k in included], weights)
        return arrays_of(average), MetricRecord({"train_loss": loss, "clients": len(included)})

    def check_reply(self, reply: Message) -> tuple[int | None, str | None]:
        """(the client index of the sender, why its upload cannot be averaged or None)."""
        assert self.nodes is not None
        k = self.nodes.client.get(sender(reply))
        problem = reply_problem(reply, arrays=True, need=("num-examples", "train_loss"))
        if k is None or problem is not None:
            return k, problem
        if (number(reply.content.metric_records[METRICS], "num-examples") or 0) < 1:
            return k, "num-examples must be >= 1"
        try:
            state = state_of(reply.content.array_records[self.arrayrecord_key])
        except (TypeError, ValueError) as exc:
            return k, f"unreadable arrays: {exc}"
        return k, mismatch(state, self.current)

    def leave_out(self, rnd: int, who: int, why: str) -> None:
        log.warning("fedit: round %d: client %d left out: %s", rnd, who, why)
        self.log.left_out.append((rnd, who, why))

    # ---- evaluation: every client in the run before the first round and after the last, as fedcore's
    # FedIT server does (``evaluate_every_round``: after every round, as Flower's FedAvg does)
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if server_round not in (0, self.config.train.rounds) and not self.every_round:
            return []
        nodes = self.node_map(grid)
        conf = ConfigRecord({**config, "server-round": server_round})
        content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: conf})
        return [
            Message(content=content, message_type=MessageType.EVALUATE, dst_node_id=nodes.node[k])
            for k in nodes.indices()
        ]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        if server_round not in (0, self.config.train.rounds) and not self.every_round:
            return None
        assert self.nodes is not None
        losses: dict[int, float] = {}
        for reply in replies:
            k = self.nodes.client.get(sender(reply))
            why = reply_problem(reply, arrays=False, need=("eval_loss",))
            if k is None or why is not None:
                self.leave_out(server_round, k if k is not None else sender(reply), f"evaluation: {why}")
                continue
            losses[k] = number(reply.content.metric_records[METRICS], "eval_loss") or math.nan
        self.log.evals[server_round] = losses
        if not losses:
            return None
        return MetricRecord({"eval_loss": sum(losses.values()) / len(losses), "clients": len(losses)})

    def evaluate_start(self, grid: Grid, arrays: ArrayRecord, timeout: float) -> None:
        """The held-out loss of every client under the initial adapter (round 0), as fedcore's
        FedIT server measures before training."""
        replies = grid.send_and_receive(self.configure_evaluate(0, arrays, ConfigRecord(), grid), timeout=timeout)
        self.aggregate_evaluate(0, replies)

    def result(self, final: ArrayRecord | None) -> FedITResult:
        """The run as fedcore's ``FedITResult`` (eval_start: round 0, eval_end: the last evaluation)."""
        n = self.config.train.clients
        rounds = sorted(self.log.evals)
        start, end = self.log.evals.get(0, {}), self.log.evals[rounds[-1]] if rounds else {}
        nodes = self.nodes or NodeMap()
        dropped = nodes.dropped(n, end)
        return FedITResult(
            eval_start=[start.get(k, math.nan) for k in range(n)],
            eval_end=[end.get(k, math.nan) for k in range(n)],
            examples=[nodes.samples.get(k, 0) for k in range(n)],
            round_loss=list(self.log.round_loss),
            participants=list(self.log.participants),
            included=list(self.log.included),
            upload_bytes=list(self.log.upload_bytes),
            download_bytes=list(self.log.download_bytes),
            wall_seconds=time.perf_counter() - self.t0,
            dropped=dropped,
            final_state=state_of(final) if final is not None else {},
        )


def fedit_server_app(
    config: FedITConfig | None = None,
    *,
    wrap: Callable[[FedITStrategy], Strategy] | None = None,
    on_outcome: Outcome | None = None,
) -> ServerApp:
    """A ServerApp running ``FedITStrategy`` for ``config`` (default: the run's ``run_config``).
    ``wrap`` puts a Flower wrapper around it (e.g. ``lambda s: DifferentialPrivacyServerSideFixedClipping(s, ...)``);
    ``on_outcome`` gets fedcore's ``RunOutcome`` at the end (see ``outputs.finish_run``)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        from fedcore.integrations.flower.config import config_from_run_config

        cfg = config if config is not None else config_from_run_config(context.run_config)
        t0 = time.perf_counter()
        strategy = FedITStrategy(cfg, node_timeout_s=cfg.round_timeout_s)
        initial = arrays_of(initial_state(cfg))
        strategy.evaluate_start(grid, initial, cfg.round_timeout_s)
        outer = wrap(strategy) if wrap is not None else strategy
        result = outer.start(grid, initial, num_rounds=cfg.train.rounds, timeout=cfg.round_timeout_s)
        final = result.arrays if len(result.arrays) else initial
        finish_run(
            cfg,
            strategy.result(final),
            {},
            transport="flower",
            t0=t0,
            run_config=dict(context.run_config),
            on_outcome=on_outcome,
        )

    return app


def _client(config: FedITConfig, index: int) -> FedITClient:
    return FedITClient(config, None, index)


def fedit_client_app(config: FedITConfig | None = None) -> ClientApp:
    """The FedIT ClientApp for ``config`` (default: the run's ``run_config``); this node's shard is
    ``node_config["partition-id"]``."""
    app = ClientApp()

    @app.query("fedcore_hello")
    def hello(msg: Message, context: Context) -> Message:
        cfg, k = node_client(context, config)
        return hello_reply(msg, k, built(cfg, k, _client).samples)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        cfg, k = node_client(context, config)
        client: FedITClient = built(cfg, k, _client)
        conf, position = msg.content.config_records.get(CONFIG, ConfigRecord()), saved(context, "fedcore")
        client.seek(as_int(conf.get(STEPS, position.get("steps", 0)), STEPS))
        rnd = as_int(conf.get("server-round", 0), "server-round")
        upload, loss = client.train_round(rnd, state_of(msg.content.array_records[ARRAYS]))
        position["steps"] = client.local.drawn
        metrics = MetricRecord({"num-examples": client.samples, "train_loss": loss, "partition-id": k})
        return Message(RecordDict({ARRAYS: arrays_of(upload), METRICS: metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        cfg, k = node_client(context, config)
        client: FedITClient = built(cfg, k, _client)
        loss = client.local.evaluate(state_of(msg.content.array_records[ARRAYS]))
        metrics = MetricRecord({"num-examples": len(client.data.eval_batches), "eval_loss": loss, "partition-id": k})
        return Message(RecordDict({METRICS: metrics}), reply_to=msg)

    return app


__all__ = ["HELLO", "FedITStrategy", "RoundLog", "fedit_client_app", "fedit_server_app"]
