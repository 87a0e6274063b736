"""FedBCD (federated block-coordinate descent) as a Flower strategy and ClientApp.

Round t (Flower's round t + 1): the strategy picks block b_t with fedcore's ``BlockSchedule`` and
samples the participants with fedcore's sampler (same seeds as ``BCDServer``). Each participant
gets a train message with the block, its batch stream position (``drawn``) and, as an
``ArrayRecord``, the current global values of every block that changed since the version that node
holds (the aggregates it has not seen: nothing in round 0, one block per round after that). It
trains b_t for ``local_steps`` AdamW steps and replies with its delta Delta_t^i. The strategy checks
every reply (the round's block, names, shapes, dtypes, finite values and loss:
``fedcore.aggregate.mismatch``), averages the accepted deltas in client order and applies
theta[b_t] += eta * Delta_t, exactly as ``BCDServer.finish_round``. After the last round every node
is brought to the global model the same way and evaluated. With ``participation = 1`` the per-round
training losses and the final held-out losses are those of ``fedcore run`` on the same config.

A ClientApp keeps its copy of the global blocks in ``context.state`` (``fedcore.bcd``: the blocks
that ever changed, and their version), since a SuperNode may start a fresh process per message. A
node whose copy is not at the version the strategy expects (its state lost) says so; it is left out
of that round and gets every changed block with its next message.

ParaBlock (compute overlapping communication) and FedCyBGD (one long turn per client) need clients
that outlive a message: they run in the control-plane mode (``control.py``).
"""

from __future__ import annotations

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
from fedcore.algorithms.bcd.config import BCDConfig
from fedcore.algorithms.bcd.local import LocalBlockTraining, add_scaled_, snapshot
from fedcore.algorithms.bcd.runner import BCDResult, build_trainer, client_data, global_model
from fedcore.algorithms.bcd.schedule import BlockSchedule, sample_participants
from fedcore.algorithms.bcd.server import RoundRecord

from .config import config_from_run_config
from .local import built, hello_reply, node_client, saved
from .nodes import NodeMap, map_nodes
from .outputs import Outcome, finish_run
from .records import ARRAYS, CONFIG, METRICS, arrays_of, as_int, nbytes, number, reply_problem, sender, state_of

log = logging.getLogger("fedcore.flower")

STALE = "stale"  # a reply's metric: 1 when the node's copy was not at the expected version
KEPT = "fedcore.bcd"  # context.state: the global blocks this node holds that differ from the initial model


class FedBCDStrategy(Strategy):
    """FedBCD for fedcore's ``BCDConfig`` (``method = "fedbcd"``; see the module docstring).
    ``records`` are fedcore's ``RoundRecord``s; ``result()`` the run as a ``BCDResult``."""

    def __init__(self, config: BCDConfig, *, node_timeout_s: float = 600.0):
        if config.method != "fedbcd":
            raise ValueError(f"FedBCDStrategy runs fedbcd; {config.method} runs in the control-plane mode")
        self.config, self.node_timeout_s = config, node_timeout_s
        self.params, self.blocks = global_model(config)
        self.rng = random.Random(config.seed + 17)  # as BCDServer's
        self.schedule = BlockSchedule(config.schedule, len(self.blocks), seed=config.seed)
        self.scores: list[float] | None = None
        self.version = 0  # aggregates applied
        self.changed = [0] * len(self.blocks)  # the version after which each block last changed
        self.held: dict[int, int] = {}  # client -> the version its node holds
        self.drawn = [0] * config.clients
        self.nodes: NodeMap | None = None
        self.records: list[RoundRecord] = []
        self.eval_loss: dict[int, float] = {}
        self.t0 = time.perf_counter()

    def summary(self) -> None:
        c = self.config
        log.info("FedBCD: %d blocks (%s), %d clients, %d rounds of K=%d", len(self.blocks), c.mode, c.clients,
                 c.rounds, c.local_steps)  # fmt: skip

    def node_map(self, grid: Grid) -> NodeMap:
        if self.nodes is None:
            self.nodes = map_nodes(grid, self.config.clients, "fedbcd", timeout_s=self.node_timeout_s)
        return self.nodes

    def sync_for(self, k: int) -> tuple[ArrayRecord, int]:
        """The global values of the blocks client k's node has not seen, and the version it holds."""
        since = self.held.get(k, 0)
        names = [n for b, names in enumerate(self.blocks) if self.changed[b] > since for n in names]
        return arrays_of({n: self.params[n] for n in names}), since

    def message(self, k: int, kind: str, conf: dict[str, Any]) -> Message:
        assert self.nodes is not None
        arrays, since = self.sync_for(k)
        conf = {**conf, "version": self.version, "since": since, "drawn": self.drawn[k]}
        content = RecordDict({ARRAYS: arrays, CONFIG: ConfigRecord(conf)})
        return Message(content=content, message_type=kind, dst_node_id=self.nodes.node[k])

    # ---- training
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        nodes, t = self.node_map(grid), server_round - 1
        record = RoundRecord(t, self.schedule.block(t, self.scores), [])
        record.participants = sample_participants(nodes.indices(), self.config.participation, self.rng)
        gradient = self.config.schedule == "gradient"
        messages = []
        for k in record.participants:
            msg = self.message(k, MessageType.TRAIN, {"round": t, "block": record.block, "scores": gradient})
            record.down_bytes += nbytes(msg.content.array_records[ARRAYS])
            messages.append(msg)
            self.drawn[k] += self.config.local_steps + gradient  # + the scoring batch
        self.records.append(record)
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        record = self.records[-1]
        accepted: dict[int, Message] = {}
        for reply in replies:
            k, why = self.check_reply(reply, record.block)
            if k is None or why is not None:
                self.leave_out(record.round, k, sender(reply), why or "not a node of this run")
                continue
            accepted[k] = reply
            self.held[k] = self.version  # it applied every block sent, before training
        record.included = included = sorted(accepted)
        record.up_bytes = sum(nbytes(accepted[k].content.array_records[ARRAYS]) for k in included)
        if included:
            weights = [self.weight(k) for k in included]
            delta = weighted_average([state_of(accepted[k].content.array_records[ARRAYS]) for k in included], weights)
            add_scaled_(self.params, delta, self.config.eta)
            losses = [number(accepted[k].content.metric_records[METRICS], "train_loss") or 0.0 for k in included]
            record.train_loss = sum(w * x for w, x in zip(weights, losses, strict=True)) / sum(weights)
            self.read_scores([accepted[k] for k in included])
        self.version += 1
        self.changed[record.block] = self.version if included else self.changed[record.block]
        metrics = MetricRecord({"train_loss": record.train_loss, "clients": len(included), "block": record.block})
        return arrays_of(self.params), metrics

    def weight(self, k: int) -> float:
        assert self.nodes is not None
        return float(self.nodes.samples[k]) if self.config.weight_by_samples else 1.0

    def check_reply(self, reply: Message, block: int) -> tuple[int | None, str | None]:
        """(the sender's client index, why its delta cannot be aggregated or None)."""
        assert self.nodes is not None
        k = self.nodes.client.get(sender(reply))
        if k is not None and is_stale(reply):  # next time, send what changed since the version it holds
            held, expected = number(reply.content.metric_records[METRICS], "version"), self.held.get(k, 0)
            self.held[k] = int(held) if held is not None and 0 <= held <= self.version else 0
            return k, f"its copy of the global model is at version {self.held[k]}, not {expected}"
        problem = reply_problem(reply, arrays=True, need=("train_loss", "block"))
        if k is None or problem is not None:
            return k, problem
        metrics = reply.content.metric_records[METRICS]
        if metrics.get("block") != block:
            return k, f"delta of block {metrics.get('block')!r}, this round trains block {block}"
        delta = state_of(reply.content.array_records[ARRAYS])
        if set(delta) != set(self.blocks[block]):
            return k, f"expected the parameters of block {block}"
        return k, mismatch(delta, {n: self.params[n] for n in self.blocks[block]})

    def read_scores(self, replies: list[Message]) -> None:
        """The gradient schedule's block scores: the mean of the included clients' reports."""
        if self.config.schedule != "gradient":
            return
        reports = [r.content.config_records.get("scores", ConfigRecord()).get("scores") for r in replies]
        ok = [r for r in reports if isinstance(r, list) and len(r) == len(self.blocks)]
        if ok and len(ok) == len(reports):
            self.scores = [sum(float(r[b]) for r in ok) / len(ok) for b in range(len(self.blocks))]  # type: ignore[arg-type]

    def leave_out(self, rnd: int, k: int | None, node: int, why: str) -> None:
        who = f"client {k}" if k is not None else f"node {node}"
        log.warning("fedbcd: round %d: %s left out: %s", rnd, who, why)

    # ---- evaluation: after the last round, every node on the global model (as fedcore's run)
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if server_round != self.config.rounds:
            return []
        nodes = self.node_map(grid)
        return [self.message(k, MessageType.EVALUATE, {"round": server_round - 1}) for k in nodes.indices()]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        assert self.nodes is not None
        for reply in replies:
            k = self.nodes.client.get(sender(reply))
            why = "stale copy" if is_stale(reply) else reply_problem(reply, arrays=False, need=("eval_loss",))
            if k is None or why is not None:
                self.leave_out(server_round - 1, k, sender(reply), f"evaluation: {why}")
                continue
            self.eval_loss[k] = number(reply.content.metric_records[METRICS], "eval_loss") or math.nan
        if not self.eval_loss:
            return None
        return MetricRecord({"eval_loss": sum(self.eval_loss.values()) / len(self.eval_loss)})

    def result(self) -> BCDResult:
        n = self.config.clients
        nodes = self.nodes or NodeMap()
        dropped = nodes.dropped(n, self.eval_loss)
        return BCDResult(
            method="fedbcd",
            records=self.records,
            eval_loss=[self.eval_loss.get(k, math.nan) for k in range(n)],
            wire={},
            timeline=[],
            wall_seconds=time.perf_counter() - self.t0,
            dropped=dropped,
            final_params=self.params,
        )


def fedbcd_server_app(config: BCDConfig | None = None, *, on_outcome: Outcome | None = None) -> ServerApp:
    """A ServerApp running ``FedBCDStrategy`` for ``config`` (default: the run's ``run_config``)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = config if config is not None else config_from_run_config(context.run_config)
        t0 = time.perf_counter()
        strategy = FedBCDStrategy(cfg, node_timeout_s=cfg.round_timeout_s)
        strategy.start(grid, arrays_of(strategy.params), num_rounds=cfg.rounds, timeout=cfg.round_timeout_s)
        finish_run(cfg, strategy.result(), {}, transport="flower", t0=t0, run_config=dict(context.run_config),
                   on_outcome=on_outcome)  # fmt: skip

    return app


class NodeBlocks:
    """A node's trainer (model + stream) and the version of the global blocks it holds."""

    def __init__(self, config: BCDConfig, index: int):
        self.config, self.index = config, index
        self.data = client_data(config)[index]
        self.trainer: LocalBlockTraining = build_trainer(config, index, self.data)
        self.initial = snapshot(self.trainer.params, self.trainer.params)
        self.version = 0

    @torch.no_grad()
    def sync(self, context: Context, msg: Message) -> bool:
        """Bring the model to the message's version and the stream to its position (False: this
        node's copy is not at the version the message builds on)."""
        conf = msg.content.config_records[CONFIG]
        since, version, drawn = (as_int(conf.get(key), key) for key in ("since", "version", "drawn"))
        mine, state = saved(context, "fedcore.bcd.meta"), context.state
        if as_int(mine.get("version", 0), "version") != since:
            return False
        kept = state_of(state.array_records[KEPT]) if KEPT in state.array_records else {}
        fresh = state_of(msg.content.array_records[ARRAYS])
        if drawn < self.trainer.drawn:  # the stream is past the server's position: start it again
            self.trainer = build_trainer(self.config, self.index, self.data)
            self.version = -1
        if self.version != since:  # this process's model is another version: rebuild it from the state
            for n, p in self.trainer.params.items():
                p.copy_(kept.get(n, self.initial[n]))
        for n, value in fresh.items():
            self.trainer.params[n].copy_(value)
        for _ in range(drawn - self.trainer.drawn):
            next(self.trainer.batches)
        self.trainer.drawn = drawn
        if fresh:
            state.array_records[KEPT] = arrays_of({**kept, **fresh})
        mine["version"] = self.version = version
        return True


def fedbcd_client_app(config: BCDConfig | None = None) -> ClientApp:
    """The FedBCD ClientApp for ``config`` (default: the run's ``run_config``)."""
    app = ClientApp()

    def node_of(context: Context) -> NodeBlocks:
        cfg, k = node_client(context, config)
        return built(cfg, k, NodeBlocks)

    @app.query("fedcore_hello")
    def hello(msg: Message, context: Context) -> Message:
        node = node_of(context)
        return hello_reply(msg, node.index, len(node.data.train))

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        node = node_of(context)
        if not node.sync(context, msg):
            return _stale(msg, context)
        conf = msg.content.config_records[CONFIG]
        block = as_int(conf.get("block"), "block")
        scores = node.trainer.block_scores() if conf.get("scores") else None
        delta, loss = node.trainer.train_delta(block)
        content = RecordDict(
            {
                ARRAYS: arrays_of(delta),
                METRICS: MetricRecord({"train_loss": loss, "block": block, "num-examples": len(node.data.train)}),
            }
        )
        if scores is not None:
            content["scores"] = ConfigRecord({"scores": scores})
        return Message(content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        node = node_of(context)
        if not node.sync(context, msg):
            return _stale(msg, context)
        metrics = MetricRecord({"eval_loss": node.trainer.evaluate(), "num-examples": len(node.data.train)})
        return Message(RecordDict({METRICS: metrics}), reply_to=msg)

    return app


def _stale(msg: Message, context: Context) -> Message:
    held = as_int(saved(context, "fedcore.bcd.meta").get("version", 0), "version")
    return Message(RecordDict({METRICS: MetricRecord({STALE: 1, "version": held})}), reply_to=msg)


def is_stale(reply: Message) -> bool:
    """The node said its copy of the global blocks is not at the version the message built on."""
    if reply.has_error() or METRICS not in reply.content.metric_records:
        return False
    return bool(reply.content.metric_records[METRICS].get(STALE))


__all__ = ["FedBCDStrategy", "fedbcd_client_app", "fedbcd_server_app"]
