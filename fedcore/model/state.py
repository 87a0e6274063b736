"""SplitState: what one part of a split model hands to the next, and its wire form."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

WIRE_VERSION = 1
# The message meta key under which a state's wire version travels when its tensors go as a message's
# tensors (which are tensors only): see ``SplitState.wire_meta`` / ``SplitState.wire_version``.
WIRE_VERSION_META = "state_version"
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass
class SplitState:
    """Hidden states between parts, plus the small metadata the next part needs.

    Attributes:
        hidden: (B, T, H) float tensor, the residual stream after the sending part's last layer.
        position_ids: (B, T) or (1, T) int64, the positions of these T tokens (rotary models use
            them in every layer; learned-position models only in the head).
        attention_mask: (B, P + T) bool, True for real tokens, P = tokens already in the KV cache;
            None means no padding. The receiver builds its own 4D mask from it, so the O(T^2) mask
            never crosses the wire.
    """

    hidden: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.hidden.dim() != 3:
            raise ValueError(f"hidden must be (B, T, H), got shape {tuple(self.hidden.shape)}")
        if self.hidden.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"hidden must be a float tensor, got {self.hidden.dtype}")
        batch, steps, _ = self.hidden.shape
        pos = self.position_ids
        if pos.dim() != 2 or pos.shape[1] != steps or pos.shape[0] not in (1, batch):
            raise ValueError(f"position_ids must be (B, T) or (1, T) with T={steps}, got {tuple(pos.shape)}")
        if pos.dtype != torch.long:
            raise ValueError(f"position_ids must be int64, got {pos.dtype}")
        mask = self.attention_mask
        if mask is not None:
            if mask.dim() != 2 or mask.shape[0] != batch or mask.shape[1] < steps:
                raise ValueError(
                    f"attention_mask must be (B, P + T) with B={batch}, T={steps}, got {tuple(mask.shape)}"
                )
            self.attention_mask = mask.bool()

    def to_wire(self) -> dict[str, Any]:
        """A flat dict of tensors and plain values: what crosses a process boundary.

        Tensors are detached and contiguous; nothing else is needed to rebuild the state.
        """
        out: dict[str, Any] = {
            "version": WIRE_VERSION,
            "hidden": self.hidden.detach().contiguous(),
            "position_ids": self.position_ids.contiguous(),
        }
        if self.attention_mask is not None:
            out["attention_mask"] = self.attention_mask.contiguous()
        return out

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> SplitState:
        """Rebuild a state from ``to_wire()`` output; unknown keys or versions are refused."""
        allowed = {"version", "hidden", "position_ids", "attention_mask"}
        extra = set(wire) - allowed
        if extra:
            raise ValueError(f"unknown SplitState wire keys {sorted(extra)}; allowed: {sorted(allowed)}")
        _check_version(wire.get("version"), "wire")
        for key in ("hidden", "position_ids"):
            if not isinstance(wire.get(key), torch.Tensor):
                raise ValueError(f"SplitState wire needs a tensor {key!r}")
        mask = wire.get("attention_mask")
        if mask is not None and not isinstance(mask, torch.Tensor):
            raise ValueError("SplitState wire 'attention_mask' must be a tensor when present")
        return cls(hidden=wire["hidden"], position_ids=wire["position_ids"], attention_mask=mask)

    @staticmethod
    def wire_meta() -> dict[str, int]:
        """What a message whose tensors are this state's wire tensors adds to its meta: the sender's
        wire version, ``{WIRE_VERSION_META: WIRE_VERSION}`` (the receiver reads it with ``wire_version``)."""
        return {WIRE_VERSION_META: WIRE_VERSION}

    @staticmethod
    def wire_version(meta: Mapping[str, Any]) -> int:
        """The sender's wire version in a received message's ``meta`` (put there by ``wire_meta``).

        Raises ``ValueError`` when it is missing or not this side's ``WIRE_VERSION``: a state of
        another version is refused, never read as this one.
        """
        if WIRE_VERSION_META not in meta:
            raise ValueError(f"no SplitState wire version in the message meta ({WIRE_VERSION_META!r})")
        return _check_version(meta[WIRE_VERSION_META], f"meta {WIRE_VERSION_META!r}")

    def wire_nbytes(self) -> int:
        """Bytes of tensor payload ``to_wire()`` carries (hidden + metadata)."""
        tensors = [self.hidden, self.position_ids]
        if self.attention_mask is not None:
            tensors.append(self.attention_mask)
        return sum(t.numel() * t.element_size() for t in tensors)


def _check_version(version: Any, where: str) -> int:
    """``version`` when it is exactly ``WIRE_VERSION`` (an int: not True, not 1.0); else ``ValueError``."""
    if type(version) is not int or version != WIRE_VERSION:
        raise ValueError(f"SplitState wire version {version!r} ({where}), expected {WIRE_VERSION}")
    return version
