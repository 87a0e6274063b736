"""The server of split learning (sequential mode; ``client_batch`` and ``hierarchical`` extend it):
a message-driven role over a Link, in one process (``InProcessHub``) or across processes
(``fedcore.transport`` Server, CURVE on).

The server orchestrates: it asks each client in turn to train ``local_steps`` steps, answers the
client's h_A with h_B and its dL/dh_B with dL/dh_A, averages the clients' head/tail LoRA (FedAvg
weighted by samples) after every round, and asks for held-out losses at the start and the end. A
client that is lost, or whose message breaks the protocol, is dropped and the others go on; one
that comes back rejoins at the next round. Message tags name the tensors for byte accounting:
h_A, h_B, dh_B, dh_A, eval_h_A, eval_h_B, lora_up, lora_down, control.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from fedcore.aggregate import weighted_average
from fedcore.codec import Codec
from fedcore.model import SplitState
from fedcore.transport import PeerTimeout, TransportError

from ..roster import Roster
from .step import ServerParts
from .wire import (
    ProtocolError,
    check_lora_upload,
    checked_grad,
    checked_state,
    meta_float,
    meta_int,
    state_meta,
    state_tensors,
    step_reports,
)

log = logging.getLogger("fedcore.split")


@dataclass
class StepReport:
    round: int
    client: int
    step: int
    loss: float
    tokens: int
    seconds: float


@dataclass
class SplitResume:
    """Where a resumed run goes on: the result after ``rounds_done`` rounds, the
    head/tail LoRA average of the last one and each active client's state (peer -> tensors, JSON)."""

    result: SplitServerResult
    rounds_done: int
    last_avg: dict[str, torch.Tensor]
    client_states: dict[str, tuple[dict[str, torch.Tensor], dict[str, Any]]]


@dataclass
class SplitServerResult:
    eval_start: list[float]
    eval_end: list[float]
    reports: list[StepReport] = field(default_factory=list)
    train_seconds: float = 0.0  # wall time from the first train order to the last step (no evaluation)


class SplitServerRole:
    """The server: holds the body (with LoRA) and drives the clients (sequential mode)."""

    def __init__(
        self,
        link: Any,
        parts: ServerParts,
        clients: list[str],
        weights: list[float],
        *,
        codecs: Mapping[str, str | Codec] | None = None,
        timeout: float = 300.0,
        on_step: Callable[[StepReport], None] | None = None,
    ):
        self.link, self.parts, self.clients, self.weights = link, parts, clients, weights
        self.device = parts.device
        self.timeout, self.on_step = timeout, on_step
        codecs = codecs or {}
        self.codec_down, self.codec_grad = codecs.get("h_B", "raw"), codecs.get("dh_A", "raw")
        self._pending: dict[tuple[str, int], tuple[SplitState, SplitState]] = {}  # (peer, micro-batch)
        self._gen_caches: dict[str, Any] = {}
        # clients still in the run (one whose lease runs out is dropped), peer -> why it was
        # dropped, peer -> the round it came back at
        self.roster = Roster(clients, name="split")
        self.active, self.dropped, self.rejoined = self.roster.active, self.roster.dropped, self.roster.rejoined
        self._rejoining: set[str] = set()
        self._last_avg: dict[str, torch.Tensor] = {}  # the latest head/tail LoRA average
        # checkpoints: called after each round's average with the result so far
        self.on_round: Callable[[int, SplitServerResult], None] | None = None
        self.resume_from: SplitResume | None = None  # set before run() to go on from a checkpoint

    def run(self, *, rounds: int, local_steps: int, avg_period: int = 0) -> SplitServerResult:
        """Sequential mode: each client in turn trains ``local_steps``; head/tail LoRA is averaged
        after every round (``avg_period`` has no other meaning when clients take turns)."""
        result, first, started = self.begin()
        step = len(result.reports)
        for rnd in range(first, rounds):
            self.readmit(rnd, steps_done=rnd * local_steps)
            for k, peer in enumerate(self.clients):  # sequential: one client's turn at a time
                if peer not in self.active:
                    continue
                try:
                    self.link.send_to(peer, {}, {"op": "train", "steps": local_steps, "round": rnd}, tag="control")
                    done = self._serve_until(peer, "done", rnd=rnd, client=k, first_step=step)
                except (PeerTimeout, TransportError) as exc:
                    if not self.drop_if_gone(exc, peer):
                        raise
                    continue
                for loss, tokens, seconds in self.reports_of(done, local_steps):
                    result.reports.append(StepReport(rnd, k, step, loss, tokens, seconds))
                    step += 1
            self.average()
            self.round_done(rnd, result, started)
        result.train_seconds = time.perf_counter() - started
        result.eval_end = self.evaluate()
        self.stop()
        return result

    def begin(self) -> tuple[SplitServerResult, int, float]:
        """A run's start in every mode: (the result so far, the first round to run, the
        ``perf_counter`` the training time counts from). Fresh: average the clients' adapters (all
        start from the same one) and evaluate; resumed: hand every client its state back."""
        if self.resume_from is None:
            self.average()
            result, first = SplitServerResult(eval_start=self.evaluate(), eval_end=[]), 0
        else:
            result, first = self.resume_from.result, self.resume_from.rounds_done
            self.reload_clients(self.resume_from)
        return result, first, time.perf_counter() - result.train_seconds

    def round_done(self, rnd: int, result: SplitServerResult, started: float) -> None:
        """After round ``rnd``'s last average: the checkpoint hook (``on_round``)."""
        if self.on_round is not None:
            result.train_seconds = time.perf_counter() - started
            self.on_round(rnd, result)

    def reports_of(self, done: Any, steps: int) -> list[tuple[float, int, float]]:
        """The step reports in a client's ``done`` message; a client whose reports are malformed
        is dropped (its steps go unreported) and the run goes on."""
        try:
            return step_reports(done.meta, steps)
        except ProtocolError as exc:
            self.drop_if_gone(exc, done.peer)
            return []

    @property
    def last_average(self) -> dict[str, torch.Tensor]:
        """The latest head/tail LoRA average: what every client in the run holds between rounds."""
        return self._last_avg

    def client_states(self) -> dict[str, tuple[dict[str, torch.Tensor], dict[str, Any]]]:
        """Each client's state beyond its LoRA (``SplitClientRole.state``), between rounds, for a
        checkpoint: peer -> (tensors, JSON). A client lost meanwhile is dropped and left out."""
        for peer in list(self.active):
            self._send_or_drop(peer, {}, {"op": "save"})
        states: dict[str, tuple[dict[str, torch.Tensor], dict[str, Any]]] = {}
        while any(p not in states for p in self.active):
            msg = self._serve_until_or_drop("saved")
            if msg is None or msg.peer not in self.active:
                continue
            tensors, state = {k: v.clone() for k, v in msg.tensors.items()}, msg.meta.get("client_state")
            msg.release()
            if not isinstance(state, dict) or not all(k.startswith(("opt.", "rng.")) for k in tensors):
                self.drop_if_gone(ProtocolError("malformed client state"), msg.peer)
                continue
            states[msg.peer] = (tensors, state)
        return states

    def reload_clients(self, point: SplitResume) -> None:
        """A resumed run's start: every client still in the run gets the checkpoint's head/tail
        average and its own state back (and answers ``loaded``); a restarted process of a
        dropped one is told to stop."""
        self._last_avg = dict(point.last_avg)
        for peer in list(self.active):
            tensors, state = point.client_states[peer]
            self._send_or_drop(
                peer, {**self._last_avg, **tensors}, {"op": "load", "client_state": state}, tag="lora_down"
            )
        loaded: set[str] = set()
        while len(loaded & set(self.active)) < len(self.active):
            msg = self._serve_until_or_drop("loaded")
            if msg is not None:
                loaded.add(msg.peer)
        self.stop_dropped()

    def _send_or_drop(self, peer: str, tensors: dict, meta: dict, *, tag: str = "control") -> None:
        try:
            self.link.send_to(peer, tensors, meta, tag=tag)
        except TransportError as exc:
            if not self.drop_if_gone(exc, peer):
                raise

    def order_train(self, steps: int, rnd: int) -> None:
        """Send every client still in the run a train order of ``steps`` steps (a lost one is dropped)."""
        for peer in list(self.active):
            try:
                self.link.send_to(peer, {}, {"op": "train", "steps": steps, "round": rnd}, tag="control")
            except TransportError as exc:
                if not self.drop_if_gone(exc, peer):
                    raise

    def stop(self) -> None:
        """Tell every client still in the run to stop, and, best effort, those dropped (one
        dropped for silence may still be alive and waiting)."""
        for peer in self.active:
            self.link.send_to(peer, {}, {"op": "stop"}, tag="control")
        self.stop_dropped()

    def stop_dropped(self) -> None:
        """Best effort: tell every dropped client to stop (one dropped for silence, or the
        restarted process of one, may be alive and waiting)."""
        for peer in self.dropped:
            try:
                self.link.send_to(peer, {}, {"op": "stop"}, tag="control")
            except TransportError:
                pass

    def drop_if_gone(self, exc: Exception, peer: str | None = None) -> bool:
        """Drop the client ``exc`` reports lost (its lease ran out, or sending to it failed):
        it leaves the current step, round and every later average; the others go on. Returns
        False when ``exc`` is not about a client still in the run (the caller re-raises)."""
        who = getattr(exc, "peer", None) or peer
        if who is not None and who not in self.clients:
            return True  # never in this run (a client that connected after a --min-clients start)
        if who in self.dropped:
            return True  # already out of the run (e.g. dropped for a bad message while awaited)
        if who not in self.active or (isinstance(exc, PeerTimeout) and getattr(exc, "peer", None) is None):
            return False
        for key in [k for k in self._pending if k[0] == who]:
            self._pending.pop(key)
        self.roster.drop(who, str(exc))  # AllClientsLost when it was the last one
        return True

    def note_hello(self, msg: Any) -> bool:
        """True (and the message released) for a ``hello``: from a dropped client it means its
        process came back (same key, so the same peer id), and it rejoins at the next round."""
        if msg.meta.get("op") != "hello":
            return False
        if msg.peer in self.dropped:
            self._rejoining.add(msg.peer)
            log.warning("split: client %s is back; it rejoins at the next round", msg.peer)
        msg.release()
        return True

    def readmit(self, rnd: int, steps_done: int = 0) -> None:
        """At the start of round ``rnd``: every dropped client that said hello again is back in
        the run, with the current head/tail LoRA average. It is told ``steps_done`` (the steps
        each client has been ordered so far) and moves its LR schedule and its data order there,
        as if it had never left; its AdamW moments, lost with its process, start from zero."""
        while True:  # hellos already waiting; between rounds nothing else is due
            try:
                msg = self.link.recv(0.05)
            except PeerTimeout as exc:
                if getattr(exc, "peer", None) is None:
                    break
                if not self.drop_if_gone(exc) and exc.peer not in self.dropped:  # type: ignore[attr-defined]
                    raise
                continue
            if not self.note_hello(msg):
                log.warning("split: ignored '%s' from %s between rounds", msg.meta.get("op"), msg.peer)
                msg.release()
        for peer in [p for p in self.clients if p in self._rejoining and p in self.dropped]:
            self.roster.rejoin(peer, rnd)
            try:
                self.link.send_to(peer, self._last_avg, {"op": "load", "resume_step": steps_done}, tag="lora_down")
                self._serve_until(peer, "loaded")
            except (PeerTimeout, TransportError) as exc:
                self.rejoined.pop(peer, None)
                if not self.drop_if_gone(exc, peer):
                    raise
        self._rejoining.clear()

    def serve_inference(self, peers: list[str] | None = None) -> None:
        """Answer split-inference requests (``gen_fwd``) until each of ``peers`` (default: every
        client) sends ``gen_done``; the body's KV cache per client is dropped then."""
        waiting = set(peers if peers is not None else self.clients)
        while waiting:
            msg = self._serve_until(None, "gen_done")
            waiting.discard(msg.peer)
            self._gen_caches.pop(msg.peer, None)

    def evaluate(self) -> list[float]:
        losses = []
        for peer in self.clients:
            if peer not in self.active:
                losses.append(float("nan"))
                continue
            try:
                self.link.send_to(peer, {}, {"op": "eval"}, tag="control")
                losses.append(float(self._serve_until(peer, "eval_result").meta["loss"]))
            except (PeerTimeout, TransportError) as exc:
                if not self.drop_if_gone(exc, peer):
                    raise
                losses.append(float("nan"))
        return losses

    def average(self) -> None:
        """FedAvg of the clients' head/tail LoRA, weighted by their training samples."""
        states: dict[str, dict[str, torch.Tensor]] = {}
        for peer in list(self.active):
            self.link.send_to(peer, {}, {"op": "upload"}, tag="control")
        while len(states) < len(self.active):
            msg = self._serve_until_or_drop("lora")
            if msg is not None and msg.peer in self.active:
                state = {k: v.clone() for k, v in msg.tensors.items()}
                msg.release()
                reference: dict[str, torch.Tensor] | None = self._last_avg or next(iter(states.values()), None)
                try:
                    check_lora_upload(state, reference)
                except ProtocolError as exc:
                    self.drop_if_gone(exc, msg.peer)
                    continue
                states[msg.peer] = state
        peers = [p for p in self.clients if p in states and p in self.active]
        weights = [self.weights[self.clients.index(p)] for p in peers]
        avg = weighted_average([states[p] for p in peers], weights)
        self._last_avg = avg
        for peer in peers:
            self.link.send_to(peer, avg, {"op": "load"}, tag="lora_down")
        loaded: set[str] = set()
        while len(loaded & set(self.active)) < len(self.active):
            msg = self._serve_until_or_drop("loaded")
            if msg is not None:
                loaded.add(msg.peer)

    def _serve_until_or_drop(self, op: str) -> Any:
        """``_serve_until(None, op)``, dropping a client whose lease runs out meanwhile (returns None then)."""
        try:
            return self._serve_until(None, op)
        except (PeerTimeout, TransportError) as exc:
            if not self.drop_if_gone(exc):
                raise
            return None

    def _serve_until(self, peer: str | None, op: str, **ctx: Any) -> Any:
        """Answer body requests until ``op`` arrives (from ``peer``, or anyone when None). A client
        whose message breaks the protocol is dropped; when it is ``peer``, ``TransportError`` says so."""
        served = 0
        while True:
            msg = self.link.recv(self.timeout)
            if self.note_hello(msg):
                continue
            if msg.peer in self.dropped:  # a late message from a client already dropped: ignored
                msg.release()
                continue
            got = msg.meta.get("op")
            if got == op and (peer is None or msg.peer == peer):
                return msg
            try:
                served += self._answer(msg, ctx, served)
            except ProtocolError as exc:
                self.drop_if_gone(exc, msg.peer)
                if msg.peer == peer:
                    raise TransportError(f"client {peer} dropped: {exc}") from exc

    @property
    def hidden_size(self) -> int:
        return int(self.parts.body.config.hidden_size)

    def _answer(self, msg: Any, ctx: dict[str, Any], served: int) -> int:
        """Serve one body request; returns 1 when it closed an optimizer step. Raises
        ``ProtocolError`` for a message the protocol does not allow here."""
        got = msg.meta.get("op")
        if got == "fwd":
            trains = bool(msg.meta.get("head_trains"))
            body_in = checked_state(
                msg.tensors, msg.meta, hidden_size=self.hidden_size, needs_grad=trains, device=self.device
            )
            h_b = self.parts.body(body_in)
            self._pending[(msg.peer, msg.meta.get("mb", 0))] = (body_in, h_b)
            self.link.send_to(msg.peer, state_tensors(h_b), state_meta(op="h_B"), tag="h_B", codec=self.codec_down)
        elif got == "bwd":
            key = (msg.peer, msg.meta.get("mb", 0))
            if key not in self._pending:
                raise ProtocolError(f"dh_B for micro-batch {key[1]} without its h_A")
            body_in, h_b = self._pending[key]
            grad_in = checked_grad(msg.tensors, h_b.hidden)
            del self._pending[key]
            h_b.hidden.backward(grad_in)  # accumulates over a step's micro-batches
            grad = body_in.hidden.grad if body_in.hidden.grad is not None else torch.zeros(0)
            self.link.send_to(msg.peer, {"grad": grad}, {"op": "dh_A"}, tag="dh_A", codec=self.codec_grad)
            if not msg.meta.get("last", True):
                return 0  # the optimizer steps after the last micro-batch
            opt, sched = self.parts.optimizer, self.parts.scheduler
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            if self.on_step is not None and "client" in ctx:
                loss, tokens = meta_float(msg.meta, "loss"), meta_int(msg.meta, "tokens", low=0, high=2**62, default=0)
                self.on_step(StepReport(ctx["rnd"], ctx["client"], ctx["first_step"] + served, loss, tokens, 0.0))
            return 1
        elif got == "gen_fwd":  # split inference: the body's KV cache for this client lives here
            state = checked_state(
                msg.tensors, msg.meta, hidden_size=self.hidden_size, needs_grad=False, device=self.device
            )
            if msg.meta.get("first") or msg.peer not in self._gen_caches:
                self._gen_caches[msg.peer] = self.parts.body.new_cache()
            with torch.no_grad():
                h_b = self.parts.body(state, cache=self._gen_caches[msg.peer])
            meta = state_meta(op="gen_h_B")
            self.link.send_to(msg.peer, state_tensors(h_b), meta, tag="gen_h_B", codec=self.codec_down)
        elif got == "eval_fwd":
            state = checked_state(
                msg.tensors, msg.meta, hidden_size=self.hidden_size, needs_grad=False, device=self.device
            )
            with torch.no_grad():
                h_b = self.parts.body(state)
            meta = state_meta(op="eval_h_B")
            self.link.send_to(msg.peer, state_tensors(h_b), meta, tag="eval_h_B", codec=self.codec_down)
        else:
            raise ProtocolError(f"unexpected '{got}'")
        return 0
