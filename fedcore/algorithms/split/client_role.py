"""The client of split learning as a message-driven role over a Link: the same code runs in one
process (``InProcessHub``) and across processes (``fedcore.transport`` Client, CURVE on).

The client holds the head and the tail with their LoRA, its batches and its optimizer; it obeys
the server's orders (train, eval, upload, load, stop) and sends h_A and dL/dh_B. ``remote_body``
lets ``fedcore.model.generate_through`` run split inference through the server.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from fedcore.codec import Codec
from fedcore.lora import load_lora_state, lora_state
from fedcore.model import SplitState

from ..training_state import load_optimizer_state, optimizer_state
from .noise import HiddenRelease
from .step import ClientParts
from .wire import (
    state_from,
    state_meta,
    state_tensors,
)

MAX_RESUME_STEPS = 10_000_000  # a rejoining client skips at most this many steps
NOISE_RNG, TORCH_RNG = "rng.noise", "rng.torch"  # a client state's generator tensors


def _expect(link: Any, op: str, timeout: float) -> Any:
    msg = link.recv(timeout)
    if msg.meta.get("op") != op:
        raise RuntimeError(f"expected '{op}', got '{msg.meta.get('op')}' from {msg.peer}")
    return msg


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
        clip: float = 0.0,
        clip_unit: str = "token",
        secret_noise: bool = False,
    ):
        self.link, self.parts, self.batches, self.eval_batches = link, parts, batches, eval_batches
        self.device = parts.device
        self.micro_batches = micro_batches
        self.steps_taken = 0  # optimizer steps (and batches) this process has taken
        self.noise_std, self.noise_relative, self.timeout = noise_std, noise_relative, timeout
        # clipping (the Gaussian mechanism) and noise the codec does not do itself
        self.release = HiddenRelease(noise_std, noise_relative, clip, clip_unit, secret_noise)
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
                if "client_state" in msg.meta:  # a resumed run: this client as it was at the checkpoint
                    self.restore(msg.tensors, msg.meta["client_state"])
                elif "resume_step" in msg.meta:  # rejoining after a restart
                    self.resume(int(msg.meta["resume_step"]))
                self.link.send_to("server", {}, {"op": "loaded"}, tag="control")
            elif op == "save":
                tensors, state = self.state()
                self.link.send_to("server", tensors, {"op": "saved", "client_state": state}, tag="state_up")
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

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """What a checkpoint needs of this client besides its LoRA (the round's average): its
        AdamW and LR-schedule state, its noise stream and torch's CPU generator (tensors
        ``opt.*``, ``rng.noise``, ``rng.torch``), the steps taken (its data position) and the
        position of an ``int8+noise`` codec's Philox stream."""
        tensors, info = optimizer_state(self.parts.optimizer, self.parts.scheduler)
        tensors[NOISE_RNG] = self.parts.noise_generator.get_state()
        tensors[TORCH_RNG] = torch.get_rng_state()
        offset = getattr(self.codec_up, "stream_offset", None)  # int8+noise: the codec's Philox stream
        return tensors, {"optimizer": info, "steps_taken": self.steps_taken, "h_A_stream_offset": offset}

    def restore(self, tensors: Mapping[str, torch.Tensor], state: Any) -> None:
        """Become the client a ``state()`` described (a fresh process of a resumed run): the
        data order skips to its steps; optimizer, schedule and generators are put back exactly."""
        if not isinstance(state, dict) or not isinstance(state.get("steps_taken"), int):
            raise ValueError(f"client_state must hold steps_taken, got {state!r}")
        steps = state["steps_taken"]
        if not self.steps_taken <= steps <= MAX_RESUME_STEPS or NOISE_RNG not in tensors or TORCH_RNG not in tensors:
            raise ValueError(f"client_state of {steps} steps with its generators cannot be restored here")
        load_optimizer_state(self.parts.optimizer, tensors, state.get("optimizer") or {}, self.parts.scheduler)
        for _ in range(steps - self.steps_taken):
            next(self.batches)
        self.steps_taken = steps
        offset = state.get("h_A_stream_offset")
        if offset is not None:
            if not hasattr(self.codec_up, "stream_offset"):
                raise ValueError("client_state has a noise stream offset; this client's h_A codec has no stream")
            self.codec_up.stream_offset = offset
        # own copies: a received tensor may be a view into a pooled receive buffer
        self.parts.noise_generator.set_state(tensors[NOISE_RNG].to("cpu", torch.uint8, copy=True))
        torch.set_rng_state(tensors[TORCH_RNG].to("cpu", torch.uint8, copy=True))

    def _train_step(self, meta: dict[str, Any]) -> list:
        if self.micro_batches > 1:
            return self._pipelined_step()
        t0 = time.perf_counter()
        batch = self._on_device(next(self.batches))
        parts = self.parts
        h_a = parts.head(batch["input_ids"], batch["attention_mask"])
        up = state_tensors(h_a)
        up["hidden"] = self.release(up["hidden"], parts.noise_generator)
        head_trains = h_a.hidden.requires_grad
        self.link.send_to("server", up, state_meta(op="fwd", head_trains=head_trains), tag="h_A", codec=self.codec_up)
        tail_in = _state(_expect(self.link, "h_B", self.timeout), needs_grad=True, device=self.device)
        loss = parts.tail(tail_in, labels=batch["labels"]).loss
        tokens = int(batch["attention_mask"].sum())
        loss_tokens = int((batch["labels"][:, 1:] != -100).sum())  # what the mean loss averages over
        self.link.send_to(
            "server",
            {"grad": _tail_backward(loss, tail_in, loss_tokens)},
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
            up["hidden"] = self.release(up["hidden"], parts.noise_generator)
            meta = state_meta(op="fwd", head_trains=h_a.hidden.requires_grad, mb=i, mbs=count)
            meta["loss_tokens"] = sum(counts)  # the step's, not the micro-batch's: a client-batch server weights by it
            self.link.send_to("server", up, meta, tag="h_A", codec=self.codec_up)
            heads.append(h_a)
        loss_sum, tokens = 0.0, int(batch["attention_mask"].sum())
        for i, mb in enumerate(micro):
            tail_in = _state(_expect(self.link, "h_B", self.timeout), needs_grad=True, device=self.device)
            loss = parts.tail(tail_in, labels=mb["labels"]).loss * (counts[i] / total)
            grad = _tail_backward(loss, tail_in, counts[i])
            loss_sum += float(loss.detach()) if counts[i] else 0.0
            last = i == count - 1
            reported = loss_sum if sum(counts) else float("nan")  # a mean over no tokens, as unpipelined
            meta = {"op": "bwd", "mb": i, "last": last, "loss": reported, "tokens": tokens, "loss_tokens": total}
            self.link.send_to("server", {"grad": grad}, meta, tag="dh_B", codec=self.codec_grad)
        for h_a in heads:
            down = _expect(self.link, "dh_A", self.timeout)
            if h_a.hidden.requires_grad:
                h_a.hidden.backward(down.tensors["grad"].to(self.device))
        parts.optimizer.step()
        parts.scheduler.step()
        parts.optimizer.zero_grad(set_to_none=True)
        self.steps_taken += 1
        return [loss_sum if sum(counts) else float("nan"), tokens, time.perf_counter() - t0]

    def _on_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    @torch.no_grad()
    def _eval(self) -> float:
        total, count = 0.0, 0
        for batch in map(self._on_device, self.eval_batches):
            h_a = self.parts.head(batch["input_ids"], batch["attention_mask"])
            up = state_tensors(h_a)
            # what leaves the client is clipped and noised at evaluation too
            up["hidden"] = self.release(up["hidden"], self.parts.noise_generator)
            self.link.send_to("server", up, state_meta(op="eval_fwd"), tag="eval_h_A", codec=self.codec_up)
            state = _state(_expect(self.link, "eval_h_B", self.timeout), needs_grad=False, device=self.device)
            loss = self.parts.tail(state, labels=batch["labels"]).loss
            tokens = int((batch["labels"][:, 1:] != -100).sum())
            total, count = total + float(loss) * tokens, count + tokens
        return total / max(count, 1)


def _state(msg: Any, *, needs_grad: bool, device: torch.device | str | None) -> SplitState:
    """The SplitState in the server's message ``msg``: ``ProtocolError`` when the sender's wire
    version is missing from its meta or is not this side's."""
    return state_from(msg.tensors, msg.meta, needs_grad=needs_grad, device=device)


def _tail_backward(loss: torch.Tensor, tail_in: SplitState, loss_tokens: int) -> torch.Tensor:
    """Backward from ``loss`` through the tail; returns dL/dh_B. Without loss tokens the loss is
    NaN (a mean over nothing): nothing is backpropagated and dL/dh_B is zero."""
    if loss_tokens == 0:
        return torch.zeros_like(tail_in.hidden)
    loss.backward()
    assert tail_in.hidden.grad is not None  # tail_in.hidden is a leaf that feeds the loss
    return tail_in.hidden.grad


def remote_body(
    link: Any, *, timeout: float = 300.0, codec: str | Codec = "raw", device: torch.device | str | None = None
) -> Any:
    """A ``body_step`` for ``fedcore.model.generate_through`` that asks the server over ``link``:
    sends h_A (only the new tokens once the caches hold the prompt), returns h_B on ``device``."""

    def body_step(state: SplitState, first: bool) -> SplitState:
        link.send_to("server", state_tensors(state), state_meta(op="gen_fwd", first=first), tag="gen_h_A", codec=codec)
        return _state(_expect(link, "gen_h_B", timeout), needs_grad=False, device=device)

    return body_step
