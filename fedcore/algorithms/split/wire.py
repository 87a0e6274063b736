"""Split states and gradients as message tensors (a state's wire version in the message meta),
and the checks the server applies to what a client sends: a message that breaks the protocol
raises ``ProtocolError`` and costs only that client its place in the run, never the step of the
others."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from fedcore.aggregate import mismatch
from fedcore.algorithms.roster import ProtocolViolation
from fedcore.model import SplitState

STATE_KEYS = ("hidden", "position_ids", "attention_mask")


class ProtocolError(ProtocolViolation, ValueError):
    """A message breaks the split protocol (wrong op, shape, count, state version): the server drops
    the client that sent it; a client refuses such an answer from the server. The run's one
    ``ProtocolViolation`` type (a transport ``ProtocolError``), and a ``ValueError`` as before."""

    def __str__(self) -> str:
        return f"protocol: {super().__str__()}"


def state_tensors(state: SplitState) -> dict[str, torch.Tensor]:
    """The tensors of ``state.to_wire()``; its version travels in the message meta (``state_meta``)."""
    return {k: v for k, v in state.to_wire().items() if isinstance(v, torch.Tensor)}


def state_meta(**meta: Any) -> dict[str, Any]:
    """The meta of a message that carries ``state_tensors``: ``meta`` plus the sender's SplitState
    wire version, which the receiver's ``state_from`` checks."""
    return {**meta, **SplitState.wire_meta()}


def state_from(
    msg_tensors: dict[str, torch.Tensor],
    msg_meta: Mapping[str, Any],
    *,
    needs_grad: bool,
    device: torch.device | str | None = None,
) -> SplitState:
    """The SplitState in a received message (its tensors and its meta), on ``device`` (received
    tensors are on the CPU); with ``needs_grad`` its hidden state is a fresh leaf that collects this
    side's gradient. The copies are blocking: a received tensor may sit in a pooled pinned buffer
    that is reused once its message is released. A message whose meta lacks the sender's wire
    version, or names another one, and a malformed state raise ``ProtocolError``."""
    try:
        return _state_from(msg_tensors, msg_meta, needs_grad=needs_grad, device=device)
    except ValueError as exc:
        raise ProtocolError(f"bad split state: {exc}") from exc


def _state_from(
    msg_tensors: dict[str, torch.Tensor], msg_meta: Mapping[str, Any], *, needs_grad: bool, device
) -> SplitState:
    version = SplitState.wire_version(msg_meta)  # first: the tensors of another version may mean anything
    wire = {k: msg_tensors[k] for k in STATE_KEYS if k in msg_tensors}
    if device is not None:
        wire = {k: v.to(device) for k, v in wire.items()}
    state = SplitState.from_wire({"version": version, **wire})
    if needs_grad:
        state.hidden = state.hidden.clone().requires_grad_(True)  # a leaf of this side's graph
    return state


def checked_state(
    msg_tensors: dict[str, torch.Tensor],
    msg_meta: Mapping[str, Any],
    *,
    hidden_size: int,
    needs_grad: bool,
    device: torch.device | str,
) -> SplitState:
    """``state_from`` for a client's h_A: a finite (B, T, ``hidden_size``) float state of this
    side's wire version with consistent positions and mask, or ``ProtocolError``."""
    try:
        state = _state_from(msg_tensors, msg_meta, needs_grad=needs_grad, device=device)
    except ValueError as exc:
        raise ProtocolError(f"bad h_A: {exc}") from exc
    if state.hidden.shape[-1] != hidden_size or state.hidden.numel() == 0:
        raise ProtocolError(f"h_A of shape {tuple(state.hidden.shape)}; the body takes (B, T, {hidden_size})")
    if not bool(torch.isfinite(state.hidden).all()):  # one NaN would poison the body's LoRA for everyone
        raise ProtocolError("h_A holds non-finite values")
    return state


def checked_grad(msg_tensors: dict[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """A client's dL/dh_B for the body output ``like``: same shape, floating point, finite, moved
    to ``like``'s device and dtype; or ``ProtocolError``."""
    grad = msg_tensors.get("grad")
    if not isinstance(grad, torch.Tensor) or not grad.is_floating_point() or grad.shape != like.shape:
        got = tuple(grad.shape) if isinstance(grad, torch.Tensor) else type(grad).__name__
        raise ProtocolError(f"dh_B {got} for h_B of shape {tuple(like.shape)}")
    grad = grad.to(device=like.device, dtype=like.dtype)
    if not bool(torch.isfinite(grad).all()):
        raise ProtocolError("dh_B holds non-finite values")
    return grad


def meta_int(meta: dict[str, Any], key: str, *, low: int, high: int, default: int | None = None) -> int:
    """``meta[key]`` as an int in [low, high], or ``ProtocolError``."""
    value = meta.get(key, default)
    if type(value) is not int or not low <= value <= high:
        raise ProtocolError(f"{key}={value!r}; expected an int in [{low}, {high}]")
    return value


def meta_float(meta: dict[str, Any], key: str, default: float = float("nan")) -> float:
    """``meta[key]`` as a float (``default`` when absent), or ``ProtocolError``."""
    value = meta.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"{key}={value!r}; expected a number")
    return float(value)


def step_reports(meta: dict[str, Any], steps: int) -> list[tuple[float, int, float]]:
    """The ``steps`` (loss, tokens, seconds) a client's ``done`` message reports, or ``ProtocolError``."""
    reports = meta.get("reports")
    if not isinstance(reports, list) or len(reports) != steps:
        raise ProtocolError(f"'done' must report {steps} steps")
    out = []
    for entry in reports:
        if not isinstance(entry, list | tuple) or len(entry) != 3:
            raise ProtocolError(f"a step report must be [loss, tokens, seconds], got {entry!r}")
        loss, tokens, seconds = entry
        row = {"loss": loss, "tokens": tokens, "seconds": seconds}
        out.append((meta_float(row, "loss"), meta_int(row, "tokens", low=0, high=2**62), meta_float(row, "seconds")))
    return out


def check_lora_upload(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor] | None) -> None:
    """A client's head/tail LoRA upload: finite floating tensors with ``reference``'s names,
    shapes and dtypes (the last average, or the first upload of the round); else ``ProtocolError``."""
    why = mismatch(state, reference)
    if why is not None:
        raise ProtocolError(f"LoRA upload: {why}")
