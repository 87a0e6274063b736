"""One FL-GLM / FedSEA-LLaMA split training step, with the four hand-offs made explicit.

client: head -> h_A (+noise) ->  server: body -> h_B  ->  client: tail, loss, backward -> dh_B
->  server: backward through body -> dh_A  ->  client: backward through head.  Each hand-off goes
through ``SplitState.to_wire`` / ``from_wire`` and is counted, as it would be on a socket.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedcore.accounting import ByteMeter, tensor_nbytes
from fedcore.model import SplitBody, SplitHead, SplitState, SplitTail

from .noise import add_gaussian_noise


@dataclass
class ClientParts:
    """What one client holds: its head and tail (with their LoRA), optimizer and noise stream."""

    head: SplitHead
    tail: SplitTail
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    noise_generator: torch.Generator

    @property
    def device(self) -> torch.device:
        """Where the head and tail (and so this client's tensors) live."""
        return next(self.head.parameters()).device


@dataclass
class ServerParts:
    """What the server holds for one body replica: the body, its optimizer and LR schedule."""

    body: SplitBody
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler

    @property
    def device(self) -> torch.device:
        """Where the body (and so this replica's tensors) lives."""
        return next(self.body.parameters()).device


def _receive(wire: dict, *, needs_grad: bool) -> SplitState:
    state = SplitState.from_wire(wire)
    if needs_grad:
        state.hidden.requires_grad_(True)
    return state


def split_train_step(
    client: ClientParts,
    server: ServerParts,
    batch: dict[str, torch.Tensor],
    *,
    noise_std: float,
    noise_relative: bool,
    meter: ByteMeter,
) -> float:
    """Train one mini-batch through the split and step both sides' optimizers.

    ``batch`` has ``input_ids``, ``attention_mask``, ``labels`` (B, T) int64. Returns the loss
    (mean over answer tokens) as a float. Bytes go to ``meter`` under h_A, h_B, dh_B, dh_A.
    """
    # client: head forward, perturb h_A, send
    h_a = client.head(batch["input_ids"], batch["attention_mask"])
    wire_a = h_a.to_wire()
    wire_a["hidden"] = add_gaussian_noise(
        wire_a["hidden"], noise_std, relative=noise_relative, generator=client.noise_generator
    )
    meter.add("h_A", h_a.wire_nbytes())
    head_trains = h_a.hidden.requires_grad

    # server: body forward, send h_B
    body_in = _receive(wire_a, needs_grad=head_trains)
    h_b = server.body(body_in)
    meter.add("h_B", h_b.wire_nbytes())

    # client: tail forward + backward, send dL/dh_B
    tail_in = _receive(h_b.to_wire(), needs_grad=True)
    loss = client.tail(tail_in, labels=batch["labels"]).loss
    loss.backward()
    dh_b = tail_in.hidden.grad
    assert dh_b is not None  # tail_in.hidden requires grad and feeds the loss
    meter.add("dh_B", tensor_nbytes(dh_b))

    # server: backward through the body, send dL/dh_A (only when the head has something to train)
    h_b.hidden.backward(dh_b)
    if head_trains:
        dh_a = body_in.hidden.grad
        assert dh_a is not None
        meter.add("dh_A", tensor_nbytes(dh_a))
        h_a.hidden.backward(dh_a)  # client: backward through the head

    for opt, sched in ((server.optimizer, server.scheduler), (client.optimizer, client.scheduler)):
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return float(loss.detach())
