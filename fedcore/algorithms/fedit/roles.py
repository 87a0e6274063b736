"""FedIT's server and client roles over a ``Link`` (LoRA FedAvg).

Every process builds the same frozen base and initial adapter (``local.build_model``), so only
LoRA states travel. Eval before training (round -1): ``eval`` with the global state (tag
``lora_down``) to every client -> ``eval_result`` {loss}. Round t: the server samples the
participants among the clients still in the run and sends each ``round`` {round: t} with the
global state (``lora_down``); a client loads it, trains ``train.local_steps`` steps and replies
``upload`` {round, loss, samples} with its state (``lora_up``). The server checks every upload
(names, shapes, dtypes, finite values, a finite loss, a positive sample count; a bad one drops
its client, the round goes on) and sets the global state to the weighted mean of the accepted
ones, in client order (nothing depends on arrival order). After the last round ``eval`` again
(round = ``train.rounds``), then ``stop`` to every client.

Resume: ``round`` also carries ``steps``, the local steps the server has asked of that client
before (its batch stream's position); a client whose stream is elsewhere (a fresh process after a
restart) moves it there first. After each round the server emits a ``Checkpoint`` (the global
state, the sampler's RNG, the roster, per-client steps, the results so far) with its progress
event; ``FedITServer.restore`` puts one back so that the rest of the run, and its result, are
bit-for-bit those of the uninterrupted run (``lora.dropout = 0``, as for any two runs to match).
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

from fedcore.aggregate import mismatch, weighted_average
from fedcore.transport import Message, PeerTimeout, TransportError

from ..builders import shuffled_epochs, tokenizer_of
from ..mailbox import Mailbox, op_is
from ..registry import Checkpoint, Progress, ProgressEvent, python_rng_state, restore_python_rng
from ..roster import Roster
from .config import FedITConfig
from .local import LocalTraining, State, build_model, client_data, initial_state

log = logging.getLogger("fedcore.fedit")

GLOBAL = "global/"  # the prefix of the global state's tensors in a Checkpoint


@dataclass
class FedITResult:
    """A finished run. Per client: ``eval_start`` / ``eval_end`` held-out loss (nats per label
    token, see ``LocalTraining.evaluate``) under the initial and the final global adapter (NaN:
    dropped), ``examples`` training examples. Per round: ``round_loss`` the weighted mean of the
    accepted clients' mean training loss (NaN: none accepted), ``participants`` sampled and
    ``included`` accepted client indices, ``upload_bytes`` / ``download_bytes`` the payload bytes
    of the uploads received and of the global states sent. ``dropped``: client index -> why;
    ``final_state``: the global LoRA state (CPU)."""

    eval_start: list[float]
    eval_end: list[float]
    examples: list[int]
    round_loss: list[float] = field(default_factory=list)
    participants: list[list[int]] = field(default_factory=list)
    included: list[list[int]] = field(default_factory=list)
    upload_bytes: list[int] = field(default_factory=list)
    download_bytes: list[int] = field(default_factory=list)
    wall_seconds: float = 0.0
    dropped: dict[int, str] = field(default_factory=dict)
    final_state: State = field(default_factory=dict)


def sample_clients(active: list[int], fraction: float, rng: random.Random) -> list[int]:
    """``ceil(fraction * len(active))`` (at least one) of ``active``, without replacement, sorted."""
    k = max(1, math.ceil(round(fraction * len(active), 9)))
    return sorted(rng.sample(sorted(active), min(k, len(active))))


class FedITClient:
    """Client ``index``: its model (base + LoRA on ``train.device``), its shard, its batch stream
    (``shuffled_epochs``, seed ``train.seed + 7919 * index``, continued across rounds; moved to the
    position a ``round`` message names, see ``seek``)."""

    def __init__(self, config: FedITConfig, link: Any, index: int):
        self.config, self.link, self.index = config, link, index  # the runtime may replace link before run()
        self.data = client_data(config)[index]
        self.samples = len(self.data.train)
        self.local = LocalTraining(build_model(config), self.batch_stream(), self.data.eval_batches, config)

    def batch_stream(self) -> Any:
        """The client's training batches from the start."""
        seed = self.config.train.seed + 7919 * self.index
        return shuffled_epochs(self.data, self.config.train.batch_size, seed, tokenizer_of(self.config.model).pad_id)

    def seek(self, steps: int) -> None:
        """Put the batch stream where it is after ``steps`` batches: skip ahead from here, or from
        the start when it is past that point already."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"round message: steps must be an int >= 0, got {steps!r}")
        if steps < self.local.drawn:
            self.local.batches, self.local.drawn = self.batch_stream(), 0
        if steps > self.local.drawn:
            log.info("client %d: skipping %d batches to resume", self.index, steps - self.local.drawn)
            self.local.skip(steps - self.local.drawn)

    def train_round(self, t: int, state: State) -> tuple[State, float]:
        """Round ``t`` from the global ``state``: (the uploaded state, mean training loss)."""
        return self.local.train(state)

    def run(self) -> None:
        """Obey the server until ``stop``."""
        mail = Mailbox(self.link)
        while True:
            msg = mail.get(lambda m: m.meta.get("op") in ("round", "eval", "stop"))
            op, meta, state = msg.meta["op"], msg.meta, {n: t.clone() for n, t in msg.tensors.items()}
            msg.release()
            if op == "stop":
                return
            if op == "round":
                t = int(meta["round"])
                if "steps" in meta:
                    self.seek(meta["steps"])
                upload, loss = self.train_round(t, state)
                info = {"op": "upload", "round": t, "loss": loss, "samples": self.samples}
                self.link.send_to("server", upload, info, tag="lora_up")
            else:
                info = {"op": "eval_result", "round": meta.get("round"), "loss": self.local.evaluate(state)}
                self.link.send_to("server", {}, info, tag="control")


class FedITServer:
    """FedIT's server for clients ``peers`` (peer ids in client order); ``run()`` returns the
    ``FedITResult``. ``on_progress(ProgressEvent(1, round_loss, "round t+1/T", t, checkpoint))``
    after round t, ``checkpoint`` its ``Checkpoint`` (round t + 1); ``restore`` one before ``run()``
    to go on from there (round -1's evaluation is not repeated: ``eval_start`` is the checkpoint's)."""

    def __init__(self, config: FedITConfig, link: Any, peers: list[str], on_progress: Progress | None = None):
        if len(peers) != config.num_clients:
            raise ValueError(f"{len(peers)} peers for train.clients = {config.num_clients}")
        self.t0 = time.perf_counter()
        self.config, self.link, self.peers, self.on_progress = config, link, peers, on_progress
        self.state = initial_state(config)
        self.examples = [len(d.train) for d in client_data(config)]
        self.roster = Roster(peers, name="fedit")
        self.mail = Mailbox(link, ignore=("hello",), keep=("upload", "eval_result"), max_kept=4 * len(peers))
        self.rng = random.Random(config.train.seed + 17)
        self.steps = [0] * len(peers)  # local steps asked of each client so far (its stream's position)
        self.resumed: FedITResult | None = None  # the results up to the restored checkpoint

    def run(self) -> FedITResult:
        rounds = self.config.train.rounds
        if self.resumed is None:
            result = FedITResult(eval_start=self.evaluate(-1), eval_end=[], examples=list(self.examples))
        else:
            result = self.resumed
            for peer in self.roster.dropped:  # a restarted client of a dropped one: let it go
                self.send(peer, {}, {"op": "stop"}, tag="control", drop=False)
        for t in range(len(result.round_loss), rounds):
            self.round(t, result)
            if self.on_progress is not None:
                ckpt = functools.partial(self.checkpoint, result)  # built only by a caller that keeps it
                self.on_progress(ProgressEvent(1, result.round_loss[-1], f"round {t + 1}/{rounds}", t, ckpt))
        result.eval_end = self.evaluate(rounds)
        for peer in self.peers:  # the dropped ones too, best effort: one still alive stops waiting
            self.send(peer, {}, {"op": "stop"}, tag="control", drop=False)
        result.wall_seconds = time.perf_counter() - self.t0
        result.dropped = self.roster.dropped_by_index()
        result.final_state = self.state
        return result

    def round(self, t: int, result: FedITResult) -> None:
        """Sample, send the global state, collect, check, average (in client order)."""
        sampled = sample_clients(self.roster.active_indices(), self.config.participation, self.rng)
        size = sum(x.numel() * x.element_size() for x in self.state.values())
        sent = []
        for i in sampled:
            meta = {"op": "round", "round": t, "steps": self.steps[i]}
            if self.send(self.peers[i], self.state, meta, tag="lora_down"):
                sent.append(i)
                self.steps[i] += self.config.train.local_steps
        msgs = self.collect("upload", t, sent)
        included, states, weights, losses = [], [], [], []
        for i in sorted(msgs):
            problem = self.check_upload(msgs[i])
            if problem is not None:
                self.drop(self.peers[i], f"bad upload in round {t}: {problem}")
                continue
            included.append(i)
            states.append(msgs[i].tensors)
            weights.append(float(msgs[i].meta["samples"]) if self.config.weight_by_samples else 1.0)
            losses.append(float(msgs[i].meta["loss"]))
        if included:
            self.state = weighted_average(states, weights)
        loss = sum(w * x for w, x in zip(weights, losses, strict=True)) / sum(weights) if included else math.nan
        result.round_loss.append(loss)
        result.participants.append(sampled)
        result.included.append(included)
        result.upload_bytes.append(sum(m.nbytes for m in msgs.values()))
        result.download_bytes.append(size * len(sent))
        for m in msgs.values():
            m.release()

    def checkpoint(self, result: FedITResult) -> Checkpoint:
        """The run after ``len(result.round_loss)`` rounds: the global state (CPU copies, names
        prefixed ``global/``) and, JSON-ready, the sampler's RNG, the roster (by client index),
        per-client steps, the seconds so far and the per-round results."""
        roster = self.roster
        state = {
            "algorithm": "fedit",
            "clients": len(self.peers),
            "sampler_rng": python_rng_state(self.rng),
            "roster": {
                "active": roster.active_indices(),
                "dropped": [[roster.index(p), why] for p, why in roster.dropped.items()],
                "rejoined": [[roster.index(p), rnd] for p, rnd in roster.rejoined.items()],
            },
            "steps": list(self.steps),
            "wall_seconds": time.perf_counter() - self.t0,
            "result": {
                "eval_start": list(result.eval_start),
                "examples": list(result.examples),
                "round_loss": list(result.round_loss),
                "participants": [list(p) for p in result.participants],
                "included": [list(p) for p in result.included],
                "upload_bytes": list(result.upload_bytes),
                "download_bytes": list(result.download_bytes),
            },
        }
        tensors = {GLOBAL + n: t.detach().to("cpu", copy=True) for n, t in self.state.items()}
        return Checkpoint(round=len(result.round_loss), tensors=tensors, state=state)

    def restore(self, ckpt: Checkpoint) -> None:
        """Go on from ``ckpt`` (one of ``checkpoint``'s, also after a save and load): call after
        construction, before ``run()``, which then starts at round ``ckpt.round``. ``ValueError``
        (one line) when it is not a FedIT checkpoint of this config's clients and adapter."""
        try:
            self._restore(ckpt)
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"not a FedIT checkpoint: {type(exc).__name__}: {exc}") from exc

    def _restore(self, ckpt: Checkpoint) -> None:
        st, rounds = ckpt.state, self.config.train.rounds
        if st["algorithm"] != "fedit":
            raise ValueError(f"checkpoint of algorithm {st['algorithm']!r}, not 'fedit'")
        if st["clients"] != len(self.peers):
            raise ValueError(f"checkpoint of {st['clients']} clients, this run has {len(self.peers)}")
        if not 0 <= ckpt.round <= rounds:
            raise ValueError(f"checkpoint after {ckpt.round} rounds; train.rounds = {rounds}")
        res = st["result"]
        per_round = ("round_loss", "participants", "included", "upload_bytes", "download_bytes")
        if any(len(res[k]) != ckpt.round for k in per_round):
            raise ValueError(f"checkpoint after {ckpt.round} rounds holds {len(res['round_loss'])} rounds of results")
        if list(res["examples"]) != self.examples:
            raise ValueError(f"checkpoint's clients hold {res['examples']} examples, this config's {self.examples}")
        if len(res["eval_start"]) != len(self.peers) or len(st["steps"]) != len(self.peers):
            raise ValueError(f"checkpoint's per-client lists are not of {len(self.peers)} clients")
        state = {n[len(GLOBAL) :]: t for n, t in ckpt.tensors.items() if n.startswith(GLOBAL)}
        why = mismatch(state, self.state)
        if why is not None:
            raise ValueError(f"checkpoint's global state does not fit this config's adapter: {why}")
        rng = restore_python_rng(random.Random(), st["sampler_rng"])
        roster, peers = st["roster"], self.peers
        active = [peers[int(i)] for i in roster["active"]]
        dropped = {peers[int(i)]: str(why) for i, why in roster["dropped"]}
        rejoined = {peers[int(i)]: int(rnd) for i, rnd in roster["rejoined"]}
        if not active or sorted(active + list(dropped)) != sorted(peers):
            raise ValueError(f"checkpoint's roster {roster['active']} active, {len(dropped)} dropped does not fit")
        resumed = FedITResult(
            eval_start=[float(x) for x in res["eval_start"]],
            eval_end=[],
            examples=list(self.examples),
            round_loss=[float(x) for x in res["round_loss"]],
            participants=[[int(i) for i in p] for p in res["participants"]],
            included=[[int(i) for i in p] for p in res["included"]],
            upload_bytes=[int(x) for x in res["upload_bytes"]],
            download_bytes=[int(x) for x in res["download_bytes"]],
        )
        steps, wall = [int(x) for x in st["steps"]], float(st["wall_seconds"])
        # all read and checked: only now change the server
        self.rng = rng
        self.roster.active[:], self.roster.dropped, self.roster.rejoined = active, dropped, rejoined
        self.steps = steps
        self.state = {n: state[n].to("cpu", copy=True) for n in self.state}  # this run's name order
        self.t0 = time.perf_counter() - wall
        self.resumed = resumed
        log.info("fedit: resuming after round %d of %d", ckpt.round, rounds)

    def check_upload(self, msg: Message) -> str | None:
        """Why an upload cannot be averaged (None if it can)."""
        why = mismatch(msg.tensors, self.state)
        if why is not None:
            return why
        loss, samples = msg.meta.get("loss"), msg.meta.get("samples")
        if not isinstance(loss, (int, float)) or isinstance(loss, bool) or not math.isfinite(loss):
            return f"loss must be a finite number, got {loss!r}"
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
            return f"samples must be a positive int, got {samples!r}"
        return None

    def evaluate(self, rnd: int) -> list[float]:
        """Every active client's held-out loss under the global state (NaN: dropped)."""
        meta = {"op": "eval", "round": rnd}
        peers = [p for p in list(self.roster.active) if self.send(p, self.state, meta, tag="lora_down")]
        msgs = self.collect("eval_result", rnd, [self.roster.index(p) for p in peers])
        out = [math.nan] * len(self.peers)
        for i, msg in sorted(msgs.items()):
            loss = msg.meta.get("loss")
            if isinstance(loss, (int, float)) and not isinstance(loss, bool):
                out[i] = float(loss)
            else:
                self.drop(self.peers[i], f"eval loss must be a number, got {loss!r}")
            msg.release()
        return out

    def collect(self, op: str, rnd: int, expected: list[int]) -> dict[int, Message]:
        """One ``op`` message of round ``rnd`` from each of ``expected`` still in the run; the ones
        missing after ``round_timeout_s`` are dropped. Returns client index -> message."""
        waiting = {self.peers[i] for i in expected}
        got: dict[int, Message] = {}
        deadline = time.monotonic() + self.config.round_timeout_s
        while True:
            waiting &= set(self.roster.active)
            left = deadline - time.monotonic()
            if not waiting or left <= 0:
                break
            try:
                msg = self.mail.get(_from(op, rnd, waiting), timeout=min(1.0, left), on_drop=self.on_drop)
            except PeerTimeout:
                continue
            waiting.discard(msg.peer)
            got[self.roster.index(msg.peer)] = msg
        for peer in sorted(waiting):
            self.drop(peer, f"no {op!r} for round {rnd} within {self.config.round_timeout_s} s")
        for i in [i for i in got if self.peers[i] not in self.roster]:  # dropped since it arrived
            got.pop(i).release()
        return got

    def send(self, peer: str, tensors: State, meta: dict[str, Any], *, tag: str, drop: bool = True) -> bool:
        try:
            self.link.send_to(peer, tensors, meta, tag=tag)
            return True
        except TransportError as exc:
            if drop:
                self.drop(peer, f"send failed: {exc}")
            return False

    def on_drop(self, exc: PeerTimeout) -> None:
        peer = getattr(exc, "peer", None)
        if peer in self.peers:
            self.drop(peer, str(exc))

    def drop(self, peer: str, why: str) -> None:
        """Take ``peer`` out of the run and tell it to stop (best effort); ``AllClientsLost``
        when it was the last one."""
        if peer not in self.roster:
            return
        self.send(peer, {}, {"op": "stop"}, tag="control", drop=False)
        self.roster.drop(peer, why)


def _from(op: str, rnd: int, peers: set[str]) -> Any:
    match = op_is(op, rnd)
    return lambda m: match(m) and m.peer in peers
