"""Split learning as two message-driven roles over a Link: the same code runs in one process
(``InProcessHub``) and across processes (``fedcore.transport`` Server / Client, CURVE on).

The server orchestrates: it asks each client in turn to train ``local_steps`` steps (sequential
mode), answers the client's h_A with h_B and its dL/dh_B with dL/dh_A, averages the clients'
head/tail LoRA (FedAvg weighted by samples) after every round, and asks for held-out losses at
the start and the end. Message tags name the tensors for byte accounting: h_A, h_B, dh_B, dh_A,
eval_h_A, eval_h_B, lora_up, lora_down, control.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from fedcore.aggregate import weighted_average
from fedcore.codec import Codec
from fedcore.lora import load_lora_state, lora_state
from fedcore.model import SplitState
from fedcore.transport import PeerTimeout, TransportError

from .noise import add_gaussian_noise
from .step import ClientParts, ServerParts

log = logging.getLogger("fedcore.split")

STATE_KEYS = ("hidden", "position_ids", "attention_mask")
MAX_RESUME_STEPS = 10_000_000  # a rejoining client skips at most this many steps


def state_tensors(state: SplitState) -> dict[str, torch.Tensor]:
    """The tensors of ``state.to_wire()`` (its version travels in the message meta)."""
    return {k: v for k, v in state.to_wire().items() if isinstance(v, torch.Tensor)}


def state_from(
    msg_tensors: dict[str, torch.Tensor], *, needs_grad: bool, device: torch.device | str | None = None
) -> SplitState:
    """The SplitState in a received message, on ``device`` (received tensors are on the CPU);
    with ``needs_grad`` its hidden state is a fresh leaf that collects this side's gradient.
    The copies are blocking: a received tensor may sit in a pooled pinned buffer that is reused
    once its message is released."""
    wire = {k: msg_tensors[k] for k in STATE_KEYS if k in msg_tensors}
    if device is not None:
        wire = {k: v.to(device) for k, v in wire.items()}
    state = SplitState.from_wire({"version": 1, **wire})
    if needs_grad:
        state.hidden = state.hidden.clone().requires_grad_(True)  # a leaf of this side's graph
    return state


def _expect(link: Any, op: str, timeout: float) -> Any:
    msg = link.recv(timeout)
    if msg.meta.get("op") != op:
        raise RuntimeError(f"expected '{op}', got '{msg.meta.get('op')}' from {msg.peer}")
    return msg


@dataclass
class StepReport:
    round: int
    client: int
    step: int
    loss: float
    tokens: int
    seconds: float


class SplitClientRole:
    """A client: holds head + tail (with LoRA), its batches and eval batches; obeys the server."""

    def __init__(
        self,
        link: Any,
        parts: ClientParts,
        batches,
        eval_batches: list[dict[str, torch.Tensor]],
        *,
        noise_std: float,
        noise_relative: bool,
        codecs: Mapping[str, str | Codec] | None = None,
        micro_batches: int = 1,
        timeout: float = 300.0,
    ):
        self.link, self.parts, self.batches, self.eval_batches = link, parts, batches, eval_batches
        self.device = parts.device
        self.micro_batches = micro_batches
        self.steps_taken = 0  # optimizer steps (and batches) this process has taken
        self.noise_std, self.noise_relative, self.timeout = noise_std, noise_relative, timeout
        codecs = codecs or {}
        self.codec_up, self.codec_grad = codecs.get("h_A", "raw"), codecs.get("dh_B", "raw")

    def run(self) -> None:
        """Serve the server's requests until it says stop."""
        while True:
            msg = self.link.recv(None)  # waiting for a turn can take long; the lease reports a dead server
            op = msg.meta.get("op")
            if op == "train":
                reports = [self._train_step(msg.meta) for _ in range(int(msg.meta["steps"]))]
                self.link.send_to("server", {}, {"op": "done", "reports": reports}, tag="control")
            elif op == "eval":
                self.link.send_to("server", {}, {"op": "eval_result", "loss": self._eval()}, tag="control")
            elif op == "upload":
                up = {f"head.{k}": v for k, v in lora_state(self.parts.head).items()}
                up.update({f"tail.{k}": v for k, v in lora_state(self.parts.tail).items()})
                self.link.send_to("server", up, {"op": "lora"}, tag="lora_up")
            elif op == "load":
                for part in ("head", "tail"):
                    prefix = f"{part}."
                    load_lora_state(
                        getattr(self.parts, part),
                        {k[len(prefix) :]: v for k, v in msg.tensors.items() if k.startswith(prefix)},
                    )
                if "resume_step" in msg.meta:  # rejoining after a restart
                    self.resume(int(msg.meta["resume_step"]))
                self.link.send_to("server", {}, {"op": "loaded"}, tag="control")
            elif op == "stop":
                return
            else:
                raise RuntimeError(f"unknown request {op!r} from the server")

    def resume(self, steps_done: int) -> None:
        """Move a restarted client to where it would be after ``steps_done`` steps: its LR
        schedule steps that often and its data order skips that many batches (both start from
        zero in a new process). Refuses a negative count or one beyond ``MAX_RESUME_STEPS``."""
        if not 0 <= steps_done <= MAX_RESUME_STEPS:
            raise ValueError(f"resume_step must be in [0, {MAX_RESUME_STEPS}], got {steps_done}")
        with warnings.catch_warnings():  # stepping a schedule before its optimizer is the point here
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(steps_done - self.steps_taken):
                self.parts.scheduler.step()
                next(self.batches)
        self.steps_taken = max(self.steps_taken, steps_done)

    def _train_step(self, meta: dict[str, Any]) -> list:
        if self.micro_batches > 1:
            return self._pipelined_step()
        t0 = time.perf_counter()
        batch = self._on_device(next(self.batches))
        parts = self.parts
        h_a = parts.head(batch["input_ids"], batch["attention_mask"])
        up = state_tensors(h_a)
        up["hidden"] = add_gaussian_noise(
            up["hidden"], self.noise_std, relative=self.noise_relative, generator=parts.noise_generator
        )
        head_trains = h_a.hidden.requires_grad
        self.link.send_to("server", up, {"op": "fwd", "head_trains": head_trains}, tag="h_A", codec=self.codec_up)
        tail_in = state_from(_expect(self.link, "h_B", self.timeout).tensors, needs_grad=True, device=self.device)
        loss = parts.tail(tail_in, labels=batch["labels"]).loss
        loss.backward()
        assert tail_in.hidden.grad is not None
        tokens = int(batch["attention_mask"].sum())
        loss_tokens = int((batch["labels"][:, 1:] != -100).sum())  # what the mean loss averages over
        self.link.send_to(
            "server",
            {"grad": tail_in.hidden.grad},
            {"op": "bwd", "loss": float(loss.detach()), "tokens": tokens, "loss_tokens": loss_tokens},
            tag="dh_B",
            codec=self.codec_grad,
        )
        down = _expect(self.link, "dh_A", self.timeout)
        if head_trains:
            h_a.hidden.backward(down.tensors["grad"].to(self.device))
        parts.optimizer.step()
        parts.scheduler.step()
        parts.optimizer.zero_grad(set_to_none=True)
        self.steps_taken += 1
        return [float(loss.detach()), tokens, time.perf_counter() - t0]

    def _pipelined_step(self) -> list:
        """One optimizer step over ``micro_batches`` micro-batches, GPipe-style: every h_A goes out
        first, so the server runs the body on micro-batch i while this client computes the head of
        i+1 and the tail of i-1; gradients accumulate, each micro-batch's loss weighted by its share
        of the loss tokens, so the step equals the unpipelined one. Each h_A carries the count of
        micro-batches (``mbs``) and the step's loss tokens (a client-batch server weights by them)."""
        t0 = time.perf_counter()
        batch = self._on_device(next(self.batches))
        parts = self.parts
        count = min(self.micro_batches, batch["input_ids"].shape[0])
        chunks = {k: v.chunk(count) for k, v in batch.items()}
        micro = [{k: chunks[k][i] for k in batch} for i in range(len(chunks["input_ids"]))]
        count = len(micro)  # chunk may give fewer pieces than asked
        counts = [int((mb["labels"][:, 1:] != -100).sum()) for mb in micro]
        total = max(sum(counts), 1)
        heads = []
        for i, mb in enumerate(micro):
            h_a = parts.head(mb["input_ids"], mb["attention_mask"])
            up = state_tensors(h_a)
            up["hidden"] = add_gaussian_noise(
                up["hidden"], self.noise_std, relative=self.noise_relative, generator=parts.noise_generator
            )
            meta = {"op": "fwd", "head_trains": h_a.hidden.requires_grad, "mb": i, "mbs": count}
            meta["loss_tokens"] = sum(counts)  # the step's, not the micro-batch's: a client-batch server weights by it
            self.link.send_to("server", up, meta, tag="h_A", codec=self.codec_up)
            heads.append(h_a)
        loss_sum, tokens = 0.0, int(batch["attention_mask"].sum())
        for i, mb in enumerate(micro):
            tail_in = state_from(_expect(self.link, "h_B", self.timeout).tensors, needs_grad=True, device=self.device)
            loss = parts.tail(tail_in, labels=mb["labels"]).loss * (counts[i] / total)
            loss.backward()
            loss_sum += float(loss.detach())
            assert tail_in.hidden.grad is not None
            last = i == count - 1
            meta = {"op": "bwd", "mb": i, "last": last, "loss": loss_sum, "tokens": tokens, "loss_tokens": total}
            self.link.send_to("server", {"grad": tail_in.hidden.grad}, meta, tag="dh_B", codec=self.codec_grad)
        for h_a in heads:
            down = _expect(self.link, "dh_A", self.timeout)
            if h_a.hidden.requires_grad:
                h_a.hidden.backward(down.tensors["grad"].to(self.device))
        parts.optimizer.step()
        parts.scheduler.step()
        parts.optimizer.zero_grad(set_to_none=True)
        self.steps_taken += 1
        return [loss_sum, tokens, time.perf_counter() - t0]

    def _on_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    @torch.no_grad()
    def _eval(self) -> float:
        total, count = 0.0, 0
        for batch in map(self._on_device, self.eval_batches):
            h_a = self.parts.head(batch["input_ids"], batch["attention_mask"])
            up = state_tensors(h_a)
            up["hidden"] = add_gaussian_noise(  # what leaves the client is noised at evaluation too
                up["hidden"], self.noise_std, relative=self.noise_relative, generator=self.parts.noise_generator
            )
            self.link.send_to("server", up, {"op": "eval_fwd"}, tag="eval_h_A", codec=self.codec_up)
            state = state_from(
                _expect(self.link, "eval_h_B", self.timeout).tensors, needs_grad=False, device=self.device
            )
            loss = self.parts.tail(state, labels=batch["labels"]).loss
            tokens = int((batch["labels"][:, 1:] != -100).sum())
            total, count = total + float(loss) * tokens, count + tokens
        return total / max(count, 1)


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
        self.active = list(clients)  # clients still in the run; one whose lease runs out is dropped
        self.dropped: dict[str, str] = {}  # peer -> why
        self.rejoined: dict[str, int] = {}  # peer -> the round it came back at
        self._rejoining: set[str] = set()
        self._last_avg: dict[str, torch.Tensor] = {}  # the latest head/tail LoRA average

    def run(self, *, rounds: int, local_steps: int, avg_period: int = 0) -> SplitServerResult:
        """Sequential mode: each client in turn trains ``local_steps``; head/tail LoRA is averaged
        after every round (``avg_period`` has no other meaning when clients take turns)."""
        self.average()  # every client starts from the same adapter
        result = SplitServerResult(eval_start=self.evaluate(), eval_end=[])
        started = time.perf_counter()
        step = 0
        for rnd in range(rounds):
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
                for loss, tokens, seconds in done.meta["reports"]:
                    result.reports.append(StepReport(rnd, k, step, loss, tokens, seconds))
                    step += 1
            self.average()
        result.train_seconds = time.perf_counter() - started
        result.eval_end = self.evaluate()
        self.stop()
        return result

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
        if who not in self.active or (isinstance(exc, PeerTimeout) and getattr(exc, "peer", None) is None):
            return False
        self.active.remove(who)
        self.dropped[who] = str(exc)
        for key in [k for k in self._pending if k[0] == who]:
            self._pending.pop(key)
        log.warning("split: client %s dropped (%s); %d clients go on", who, exc, len(self.active))
        if not self.active:
            raise RuntimeError("every client has dropped out") from exc
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
            del self.dropped[peer]
            self.active = [p for p in self.clients if p in self.active or p == peer]
            try:
                self.link.send_to(peer, self._last_avg, {"op": "load", "resume_step": steps_done}, tag="lora_down")
                self._serve_until(peer, "loaded")
                self.rejoined[peer] = rnd
            except (PeerTimeout, TransportError) as exc:
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
                states[msg.peer] = {k: v.clone() for k, v in msg.tensors.items()}
                msg.release()
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
        """Answer body requests until ``op`` arrives (from ``peer``, or anyone when None)."""
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
            if got == "fwd":
                body_in = state_from(msg.tensors, needs_grad=bool(msg.meta.get("head_trains")), device=self.device)
                h_b = self.parts.body(body_in)
                self._pending[(msg.peer, msg.meta.get("mb", 0))] = (body_in, h_b)
                self.link.send_to(msg.peer, state_tensors(h_b), {"op": "h_B"}, tag="h_B", codec=self.codec_down)
            elif got == "bwd":
                body_in, h_b = self._pending.pop((msg.peer, msg.meta.get("mb", 0)))
                h_b.hidden.backward(msg.tensors["grad"].to(self.device))  # accumulates over a step's micro-batches
                grad = body_in.hidden.grad if body_in.hidden.grad is not None else torch.zeros(0)
                self.link.send_to(msg.peer, {"grad": grad}, {"op": "dh_A"}, tag="dh_A", codec=self.codec_grad)
                if not msg.meta.get("last", True):
                    continue  # the optimizer steps after the last micro-batch
                opt, sched = self.parts.optimizer, self.parts.scheduler
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                if self.on_step is not None and "client" in ctx:
                    self.on_step(
                        StepReport(
                            ctx["rnd"],
                            ctx["client"],
                            ctx["first_step"] + served,
                            float(msg.meta["loss"]),
                            int(msg.meta["tokens"]),
                            0.0,
                        )
                    )
                served += 1
            elif got == "gen_fwd":  # split inference: the body's KV cache for this client lives here
                if msg.meta.get("first") or msg.peer not in self._gen_caches:
                    self._gen_caches[msg.peer] = self.parts.body.new_cache()
                with torch.no_grad():
                    state = state_from(msg.tensors, needs_grad=False, device=self.device)
                    h_b = self.parts.body(state, cache=self._gen_caches[msg.peer])
                self.link.send_to(msg.peer, state_tensors(h_b), {"op": "gen_h_B"}, tag="gen_h_B", codec=self.codec_down)
            elif got == "eval_fwd":
                with torch.no_grad():
                    h_b = self.parts.body(state_from(msg.tensors, needs_grad=False, device=self.device))
                self.link.send_to(
                    msg.peer, state_tensors(h_b), {"op": "eval_h_B"}, tag="eval_h_B", codec=self.codec_down
                )
            else:
                raise RuntimeError(f"unexpected '{got}' from {msg.peer} while waiting for '{op}'")


def remote_body(
    link: Any, *, timeout: float = 300.0, codec: str | Codec = "raw", device: torch.device | str | None = None
) -> Any:
    """A ``body_step`` for ``fedcore.model.generate_through`` that asks the server over ``link``:
    sends h_A (only the new tokens once the caches hold the prompt), returns h_B on ``device``."""

    def body_step(state: SplitState, first: bool) -> SplitState:
        link.send_to("server", state_tensors(state), {"op": "gen_fwd", "first": first}, tag="gen_h_A", codec=codec)
        return state_from(_expect(link, "gen_h_B", timeout).tensors, needs_grad=False, device=device)

    return body_step
