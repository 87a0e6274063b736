"""The server of federated block-coordinate descent: FedBCD, and ParaBlock as FedBCD with the
next round's plan sent before the previous round is aggregated.

Round t: the server samples participants S_t, picks block b_t and sends every client still in
the run a ``plan``. It then collects the participants' deltas of a round s, aggregates
Delta_s = sum_i w_i Delta_s^i / sum_i w_i over those that arrived in time (w_i: sample counts
or 1), applies theta[b_s] += eta * Delta_s and broadcasts ``agg`` (Delta_s and who was
included) to every client. FedBCD does this for s = t before planning t + 1; ParaBlock for
s = t - 1 right after planning t, so the clients compute round t while round t - 1's update
travels; a final ``sync`` closes the run. Clients that drop out (lease expiry, failed send) leave
the run; a client late for one round is only left out of that round's aggregate.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from fedcore.aggregate import mismatch, weighted_average
from fedcore.transport import Message, PeerTimeout, TransportError

from ..mailbox import Mailbox, op_is
from ..registry import Checkpoint, python_rng_state, restore_python_rng
from ..roster import Roster
from .config import BCDConfig, resume_refusal
from .local import ParamDict, add_scaled_, snapshot
from .schedule import BlockSchedule, sample_participants
from .timeline import Timeline, timeline_records

log = logging.getLogger("fedcore.bcd")


@dataclass
class RoundRecord:
    """One round as the server saw it. ``train_loss``: the sample-weighted mean of the included
    clients' mean local training loss; ``seconds``: from this round's plan to the next one's."""

    round: int
    block: int
    participants: list[int]
    included: list[int] = field(default_factory=list)
    train_loss: float = float("nan")
    seconds: float = float("nan")
    down_bytes: int = 0  # payload bytes the server sent in this round (all clients)
    up_bytes: int = 0  # payload bytes of the uploads it accepted


class BCDServer:
    """FedBCD's server loop; ``overlap = True`` (ParaBlock) shifts aggregation one round later.

    ``peers[i]`` is client i's peer id on ``link``; ``global_params`` the global model's block
    parameters (updated in place); ``blocks`` the parameter names per block; ``samples[i]``
    client i's training examples. ``history`` (optional) receives a snapshot of the global
    parameters after each aggregate, keyed by the number of aggregates applied; ``on_record``
    (optional) gets each round's record once its aggregate is out (progress, tests).
    """

    overlap = False
    resumable = True  # checkpoint / restore at round ends

    def __init__(
        self,
        link: Any,
        peers: list[str],
        global_params: ParamDict,
        blocks: list[list[str]],
        config: BCDConfig,
        *,
        samples: list[int],
        timeline: Timeline | None = None,
        history: dict[int, ParamDict] | None = None,
        on_record: Callable[[RoundRecord], None] | None = None,
    ):
        if len(samples) != len(peers):
            raise ValueError(f"{len(samples)} sample counts for {len(peers)} clients")
        self.link, self.peers, self.params, self.blocks, self.config = link, peers, global_params, blocks, config
        self.samples = samples
        # at most a few messages per client are ever due at once (ParaBlock k > 1: k uploads)
        self.mail = Mailbox(
            link,
            ignore=("hello",),
            keep=("delta", "eval_result", "bye"),
            max_kept=4 * len(peers) * (config.staleness + 1),
        )
        self.timeline = timeline or Timeline(enabled=False)
        self.history = history
        self.on_record = on_record
        self.roster = Roster(peers, name=config.method)
        self.left: set[int] = set()  # clients that said bye at the end (their link closing is no dropout)
        self.rng = random.Random(config.seed + 17)
        self.schedule = BlockSchedule(config.schedule, len(blocks), seed=config.seed)
        self.scores: list[float] | None = None
        self.records: list[RoundRecord] = []
        self.version = 0
        # batches each client has drawn from its training stream (its position: resume moves it there)
        self.drawn = [0] * len(peers)
        self._reload = False  # restored: send every client the global model first
        self.synced = False  # ParaBlock: the closing sync was sent
        self.keep_cuts = False  # ParaBlock: keep what each checkpoint needs (on when progress is reported)
        if history is not None:
            history[0] = snapshot(global_params, global_params)

    @property
    def active(self) -> list[int]:
        """Indices of the clients still in the run, in client order."""
        return self.roster.active_indices()

    @property
    def dropped(self) -> dict[int, str]:
        """Client index -> why it left the run."""
        return self.roster.dropped_by_index()

    # ---- the loop
    def run(self) -> list[RoundRecord]:
        """All rounds, then (ParaBlock) the final sync; returns the per-round records. A round's
        ``seconds`` run from its plan to the next plan (FedBCD: to the end of its aggregate)."""
        started: float | None = None
        if self._reload:
            self.reload_clients()
        for t in range(len(self.records), self.config.rounds):
            now = time.perf_counter()
            if self.overlap and started is not None:
                self.records[-1].seconds = now - started
            started = now
            self.before_plan(t)
            record = self.plan(t)
            if not self.overlap:
                self.finish_round(record)
                record.seconds = time.perf_counter() - started
                self._report(record)
            elif t >= 1:
                self.finish_round(self.records[-2])
                self._report(self.records[-2])
        if self.overlap and self.records and not self.synced:
            if started is not None:
                self.records[-1].seconds = time.perf_counter() - started
            self.broadcast({}, {"op": "sync"}, tag="control")
            self.synced = True
            self.finish_round(self.records[-1])
            self._report(self.records[-1])
        return self.records

    def before_plan(self, t: int) -> None:
        """Runs before round ``t`` is planned (ParaBlock takes its checkpoint's cut here)."""

    def _report(self, record: RoundRecord) -> None:
        if self.on_record is not None:
            self.on_record(record)

    def plan(self, t: int) -> RoundRecord:
        record = RoundRecord(t, self.schedule.block(t, self.scores), [])
        record.participants = sample_participants(self.active, self.config.participation, self.rng)
        per_round = self.config.local_steps + (self.config.schedule == "gradient")  # + the scoring batch
        for i in list(self.active):
            train = i in record.participants
            if self.send(i, {}, {"op": "plan", "round": t, "block": record.block, "train": train}) and train:
                self.drawn[i] += per_round
        self.records.append(record)
        return record

    # ---- checkpoint and resume (FedBCD: at a round's end every client holds the global model)
    def checkpoint(self) -> Checkpoint:
        """The run after ``len(self.records)`` rounds: the global parameters (``global/`` names)
        and, JSON-ready, the sampler's and the schedule's RNG states, the latest block scores,
        the roster by client index, each client's stream position and the round records."""
        if not self.resumable:
            raise ValueError(f"{self.config.method} does not support checkpoints yet")
        return Checkpoint(round=len(self.records), tensors=self.global_tensors(), state=self.run_state())

    def global_tensors(self) -> dict[str, torch.Tensor]:
        """CPU copies of the global parameters, named ``global/<name>``."""
        return {GLOBAL + n: t.detach().to("cpu", copy=True) for n, t in self.params.items()}

    def run_state(self) -> dict[str, Any]:
        """The JSON part of a checkpoint taken now."""
        roster = self.roster
        return {
            "algorithm": self.config.method,
            "clients": len(self.peers),
            "sampler_rng": python_rng_state(self.rng),
            "schedule_rng": python_rng_state(self.schedule.rng),
            "scores": self.scores,
            "version": self.version,
            "drawn": list(self.drawn),
            "roster": {
                "active": roster.active_indices(),
                "dropped": [[roster.index(p), why] for p, why in roster.dropped.items()],
            },
            "records": [dataclasses.asdict(r) for r in self.records],
        }

    def restore(self, ckpt: Checkpoint) -> None:
        """Go on from ``ckpt`` (one of ``checkpoint``'s): call before ``run()``, which first sends
        every client the global model and its stream position. ``ValueError`` (one line) when
        it does not fit this config."""
        try:
            self._restore(ckpt)
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"not a {self.config.method} checkpoint: {type(exc).__name__}: {exc}") from exc

    def _restore(self, ckpt: Checkpoint) -> None:
        st, n = ckpt.state, len(self.peers)
        if not self.resumable:
            raise ValueError(resume_refusal(self.config) or f"{self.config.method} does not support resume")
        if st["algorithm"] != self.config.method or st["clients"] != n:
            got = f"{st['algorithm']} with {st['clients']} clients"
            raise ValueError(f"checkpoint of {got}, not of {self.config.method} with {n}")
        records_due = self.records_in(ckpt)
        if not 0 <= ckpt.round <= self.config.rounds or len(st["records"]) != records_due or len(st["drawn"]) != n:
            raise ValueError(f"checkpoint after {ckpt.round} rounds does not fit rounds = {self.config.rounds}")
        params = {name[len(GLOBAL) :]: t for name, t in ckpt.tensors.items() if name.startswith(GLOBAL)}
        why = mismatch(params, self.params)
        if why is not None:
            raise ValueError(f"checkpoint's global parameters do not fit this config's model: {why}")
        active = [self.peers[int(i)] for i in st["roster"]["active"]]
        dropped = {self.peers[int(i)]: str(why) for i, why in st["roster"]["dropped"]}
        if not active or sorted(active + list(dropped)) != sorted(self.peers):
            raise ValueError(f"checkpoint's roster {st['roster']} does not fit {n} clients")
        records = [RoundRecord(**r) for r in st["records"]]
        scores = st["scores"]
        if scores is not None and not _valid_scores(scores, len(self.blocks)):
            raise ValueError(f"checkpoint's block scores {scores!r} are not {len(self.blocks)} numbers >= 0")
        sampler = restore_python_rng(random.Random(), st["sampler_rng"])
        schedule = restore_python_rng(random.Random(), st["schedule_rng"])
        restore_own = self.read_own_state(ckpt)
        # all read and checked: only now change the server
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(params[name])
        self.rng, self.schedule.rng, self.scores = sampler, schedule, scores
        self.version, self.drawn, self.records = int(st["version"]), [int(x) for x in st["drawn"]], records
        self.roster.active[:], self.roster.dropped = active, dropped
        restore_own()
        self._reload = True
        log.info("%s: resuming after round %d of %d", self.config.method, ckpt.round, self.config.rounds)

    # the hooks a method with more state than FedBCD's overrides
    def records_in(self, ckpt: Checkpoint) -> int:
        """How many round records a checkpoint after ``ckpt.round`` rounds holds."""
        return ckpt.round

    def read_own_state(self, ckpt: Checkpoint) -> Callable[[], None]:
        """Check what ``ckpt`` holds beyond FedBCD's state and return what puts it in place
        (``ValueError`` when it does not fit; nothing is changed before every check passed)."""
        return lambda: None

    def load_message(self, i: int) -> tuple[ParamDict, dict[str, Any]]:
        """What a resumed server sends client i first: its model and where its stream was."""
        done = len(self.records)
        return self.params, {"op": "load", "drawn": self.drawn[i], "next_agg": done, "last_round": done - 1}

    def reload_clients(self) -> None:
        """After a restore: every client still in the run gets the global model and moves its
        training stream to where it was; a restarted process of a dropped one is told to stop."""
        self._reload = False
        for i in list(self.active):
            tensors, meta = self.load_message(i)
            self.send(i, tensors, meta, tag="agg_down")
        for i in self.dropped:
            try:
                self.link.send_to(self.peers[i], {}, {"op": "stop"}, tag="control")
            except TransportError:
                pass

    def finish_round(self, record: RoundRecord) -> None:
        """Collect round ``record.round``'s deltas, aggregate, apply, broadcast ``agg``."""
        msgs = self.collect(record.round, record.participants, record.block)
        self.on_uploads(record, msgs)
        record.up_bytes += sum(m.nbytes for m in msgs.values())
        with self.timeline.span("server", "aggregate", record.round):
            delta, included = self.aggregate(msgs, record.block)
            if delta:
                add_scaled_(self.params, delta, self.config.eta)
            self.version += 1
            if self.history is not None:
                self.history[self.version] = snapshot(self.params, self.params)
        record.included = included
        if included:
            w = [self.weight(i) for i in included]
            record.train_loss = sum(wi * float(msgs[i].meta["loss"]) for wi, i in zip(w, included, strict=True)) / sum(
                w
            )
            reports = [msgs[i].meta.get("scores") for i in included]
            if all(_valid_scores(r, len(self.blocks)) for r in reports):
                self.scores = [sum(float(r[b]) for r in reports) / len(reports) for b in range(len(self.blocks))]
        for m in msgs.values():
            m.release()
        meta = {"op": "agg", "round": record.round, "block": record.block, "included": included}
        record.down_bytes += self.broadcast(delta, meta, tag="agg_down")

    def on_uploads(self, record: RoundRecord, msgs: dict[int, Message]) -> None:
        """Sees round ``record.round``'s accepted uploads before they are aggregated."""

    # ---- pieces
    def weight(self, i: int) -> float:
        return float(self.samples[i]) if self.config.weight_by_samples else 1.0

    def collect(self, rnd: int, expected: list[int], block: int) -> dict[int, Message]:
        """The ``delta`` messages of round ``rnd`` from ``expected`` clients still in the run,
        until all arrived or ``round_timeout_s`` passed (the late ones are left out)."""
        waiting = {self.peers[i]: i for i in expected if i in self.active}
        got: dict[int, Message] = {}
        deadline = time.monotonic() + self.config.round_timeout_s
        while waiting:
            waiting = {p: i for p, i in waiting.items() if i in self.active}
            left = deadline - time.monotonic()
            if not waiting or left <= 0:
                break
            try:
                msg = self.mail.get(_upload_of(rnd, set(waiting)), timeout=min(1.0, left), on_drop=self.on_drop)
            except PeerTimeout:
                continue
            i = waiting.pop(msg.peer)
            problem = self.check_upload(msg, block)
            if problem:
                log.warning("bcd: round %d: client %d's upload refused: %s", rnd, i, problem)
                msg.release()
                continue
            got[i] = msg
        if waiting:
            log.warning("bcd: round %d: clients %s late; left out of this aggregate", rnd, sorted(waiting.values()))
        self.mail.discard(lambda m: m.meta.get("op") == "delta" and not _round_after(m.meta.get("round"), rnd))
        return got

    def check_upload(self, msg: Message, block: int) -> str | None:
        """Why an upload cannot be aggregated (None if it can): wrong block, names, shapes,
        dtypes, non-finite values, or a bad loss."""
        names = set(self.blocks[block])
        if msg.meta.get("block") != block or set(msg.tensors) != names:
            return f"expected the parameters of block {block}"
        why = mismatch(msg.tensors, {name: self.params[name] for name in names})
        if why is not None:
            return why
        loss = msg.meta.get("loss")
        if not isinstance(loss, (int, float)) or not math.isfinite(loss):
            return f"loss must be a finite number, got {loss!r}"
        return None

    def aggregate(self, msgs: dict[int, Message], block: int) -> tuple[ParamDict, list[int]]:
        """(Delta = weighted mean of the deltas, included client indices); ({}, []) if none."""
        included = sorted(msgs)
        if not included:
            return {}, []
        states = [msgs[i].tensors for i in included]
        return weighted_average(states, [self.weight(i) for i in included]), included

    def send(self, i: int, tensors: ParamDict, meta: dict[str, Any], *, tag: str = "control") -> bool:
        try:
            self.link.send_to(self.peers[i], tensors, meta, tag=tag)
            return True
        except TransportError as exc:
            self.drop(i, f"send failed: {exc}")
            return False

    def broadcast(self, tensors: ParamDict, meta: dict[str, Any], *, tag: str) -> int:
        """Send to every client in the run; returns the payload bytes sent."""
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        return size * sum(self.send(i, tensors, meta, tag=tag) for i in list(self.active))

    def on_drop(self, exc: PeerTimeout) -> None:
        peer = getattr(exc, "peer", None)
        if peer in self.peers and self.peers.index(peer) not in self.left:
            self.drop(self.peers.index(peer), str(exc))

    def drop(self, i: int, why: str) -> None:
        if i not in self.active:
            return
        try:  # best effort: a client that is still alive stops instead of waiting for rounds
            self.link.send_to(self.peers[i], {}, {"op": "stop"}, tag="control")
        except TransportError:
            pass
        self.roster.drop(self.peers[i], why)  # AllClientsLost when it was the last one

    def reply(self, i: int, op: str, timeout: float) -> Message | None:
        """Client i's next ``op`` message; None once it dropped out or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while i in self.active and time.monotonic() < deadline:
            try:
                return self.mail.get(op_is(op, peer=self.peers[i]), timeout=1.0, on_drop=self.on_drop)
            except PeerTimeout:
                continue
        return None

    def evaluate(self, timeout: float = 300.0) -> list[float]:
        """Each client's mean held-out loss with its current local model (NaN: dropped)."""
        for i in list(self.active):
            self.send(i, {}, {"op": "eval"})
        out = [float("nan")] * len(self.peers)
        for i in list(self.active):
            msg = self.reply(i, "eval_result", timeout)
            if msg is None:
                self.drop(i, f"no eval result within {timeout} s")
                continue
            loss = msg.meta.get("loss")
            out[i] = float(loss) if isinstance(loss, (int, float)) else float("nan")
        return out

    def finish(self, timeout: float = 60.0) -> None:
        """Tell every client to stop; merge the timelines they send back."""
        for i in list(self.active):
            if not self.send(i, {}, {"op": "stop"}):
                continue
            msg = self.reply(i, "bye", timeout)
            self.left.add(i)
            if msg is not None and "timeline" in msg.tensors:
                self.timeline.extend(timeline_records(msg.tensors["timeline"], f"client {i}"))


GLOBAL = "global/"


def _valid_scores(report: Any, blocks: int) -> bool:
    return (
        isinstance(report, list)
        and len(report) == blocks
        and all(isinstance(x, (int, float)) and math.isfinite(x) and x >= 0 for x in report)
    )


def _round_after(value: Any, rnd: int) -> bool:
    """True for an int round number after ``rnd`` (a later round's upload, kept for then)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > rnd


def _upload_of(rnd: int, peers: set[str]) -> Callable[[Message], bool]:
    def match(msg: Message) -> bool:
        return msg.meta.get("op") == "delta" and msg.meta.get("round") == rnd and msg.peer in peers

    return match


class ParaBlockServer(BCDServer):
    """ParaBlock's server: the one-round-stale global model (see the module docstring).

    Checkpoints (staleness 1): while round t is computed the clients hold their own round t - 1
    updates, not yet aggregated, so no round end has every client at the global model. The
    checkpoint reported with round t - 1's aggregate is therefore the cut just before round t was
    planned (global model through aggregate t - 2, the server's RNG and records then) plus the
    uploads of round t - 1 as they arrived (``pending/<i>/<name>``, their meta in ``pending``):
    ``round`` = t - 1. A resumed server sends every client the global model and its pending
    update, which the client applies and uploads again, and redoes round t - 1's aggregate. The
    checkpoint after the closing sync is FedBCD's (every client holds the global model).
    """

    overlap = True

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._cut: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
        self._uploads: dict[int, tuple[ParamDict, dict[str, Any]]] = {}
        self._restored: dict[int, tuple[ParamDict, dict[str, Any]]] = {}  # pending updates to hand back
        self._redo: int | None = None  # a resumed run: the round whose aggregate is redone
        self._redone: set[int] = set()  # the clients whose update of that round was handed back

    @property
    def resumable(self) -> bool:  # type: ignore[override]
        return resume_refusal(self.config) is None

    def before_plan(self, t: int) -> None:
        if self.keep_cuts and self.resumable and t >= 1:
            self._cut = (self.global_tensors(), self.run_state())

    def on_uploads(self, record: RoundRecord, msgs: dict[int, Message]) -> None:
        if self.keep_cuts and not self.synced:
            self._uploads = {i: ({n: t.clone() for n, t in m.tensors.items()}, dict(m.meta)) for i, m in msgs.items()}

    def checkpoint(self) -> Checkpoint:
        if self.synced or not self.resumable:
            return super().checkpoint()
        if self._cut is None:
            raise ValueError("parablock keeps checkpoints only with keep_cuts on, from round 1's report on")
        tensors, state = self._cut
        tensors = dict(tensors)
        for i, (delta, _) in self._uploads.items():
            tensors.update({f"{PENDING}{i}/{n}": t for n, t in delta.items()})
        state = {**state, "pending": {str(i): meta for i, (_, meta) in self._uploads.items()}}
        return Checkpoint(round=len(state["records"]) - 1, tensors=tensors, state=state)

    def records_in(self, ckpt: Checkpoint) -> int:
        return ckpt.round + ("pending" in ckpt.state)

    def read_own_state(self, ckpt: Checkpoint) -> Callable[[], None]:
        pending: dict[int, tuple[ParamDict, dict[str, Any]]] = {}
        for key, meta in ckpt.state.get("pending", {}).items():
            i, prefix = int(key), f"{PENDING}{key}/"
            delta = {n[len(prefix) :]: t for n, t in ckpt.tensors.items() if n.startswith(prefix)}
            block = meta["block"]
            if meta.get("op") != "delta" or meta.get("round") != ckpt.round or not 0 <= block < len(self.blocks):
                raise ValueError(f"checkpoint's pending update of client {i} is not one of round {ckpt.round}")
            why = mismatch(delta, {n: self.params[n] for n in self.blocks[block]})
            if why is not None:
                raise ValueError(f"checkpoint's pending update of client {i} does not fit block {block}: {why}")
            pending[i] = (delta, dict(meta))
        synced = "pending" not in ckpt.state
        if synced and ckpt.round != self.config.rounds:
            raise ValueError(f"checkpoint after the closing sync of {ckpt.round} rounds; rounds = {self.config.rounds}")

        def put() -> None:
            self._restored, self.synced = pending, synced
            self._redo = None if synced else ckpt.round

        return put

    def reload_clients(self) -> None:
        super().reload_clients()
        self._restored = {}  # handed back: the clients hold them now

    def collect(self, rnd: int, expected: list[int], block: int) -> dict[int, Message]:
        if rnd == self._redo:  # only the clients handed an update back upload it again
            expected = [i for i in expected if i in self._redone]
        return super().collect(rnd, expected, block)

    def load_message(self, i: int) -> tuple[ParamDict, dict[str, Any]]:
        if self.synced:
            return super().load_message(i)
        rnd = len(self.records) - 1  # the round whose aggregate is redone
        meta: dict[str, Any] = {"op": "load", "drawn": self.drawn[i], "next_agg": rnd, "last_round": rnd}
        tensors = dict(self.params)
        if i in self._restored:
            self._redone.add(i)
            delta, meta["pending"] = self._restored[i]
            tensors.update({PENDING + n: t for n, t in delta.items()})
        return tensors, meta


PENDING = "pending/"  # a client's update in flight at a ParaBlock checkpoint (in the load message too)
