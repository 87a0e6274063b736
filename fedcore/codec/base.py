"""The codec interface and registry.

A codec turns one tensor into one or more wire parts and back. ``raw`` and the cast codecs send
one part; the quantizing codecs send two (codes and per-row scales). On the wire, part i > 0 of a
tensor ``name`` travels as ``name#i`` right after it, with the same codec name, so a receiver can
regroup and check the parts before anything is decoded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

from .dtypes import DTYPES

PART_SEP = "#"  # reserved in tensor names: "h#1" is part 1 of "h"
FLOAT_NAMES = ("float64", "float32", "float16", "bfloat16")


class Codec(ABC):
    """Turns a tensor into the tensors that travel, and back.

    ``encode`` returns (wire parts, original dtype or None when the tensor travels unchanged);
    ``decode`` gets the parts (as received, on the CPU) and that dtype back. ``check`` validates
    what a peer claims before anything is allocated or decoded: the parts' (dtype name, shape) and
    the original dtype name; it returns the decoded size in bytes and raises ValueError otherwise.
    """

    name: str

    @abstractmethod
    def encode(self, tensor: torch.Tensor) -> tuple[list[torch.Tensor], torch.dtype | None]: ...

    @abstractmethod
    def decode(self, parts: Sequence[torch.Tensor], orig_dtype: torch.dtype | None) -> torch.Tensor: ...

    @abstractmethod
    def check(self, parts: Sequence[tuple[str, tuple[int, ...]]], orig_dtype: str | None) -> int: ...


def passthrough_size(parts: Sequence[tuple[str, tuple[int, ...]]], codec: str) -> int:
    """Decoded bytes of a tensor sent unchanged (one part); ValueError otherwise."""
    if len(parts) != 1:
        raise ValueError(f"codec {codec!r} sends an unchanged tensor as one part, got {len(parts)}")
    dtype, shape = parts[0]
    return _numel(shape) * DTYPES[dtype].itemsize


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


CODECS: dict[str, Codec] = {}


def register_codec(codec: Codec) -> Codec:
    """Make ``codec`` available by its name; names are unique."""
    if codec.name in CODECS:
        raise ValueError(f"codec {codec.name!r} is already registered")
    CODECS[codec.name] = codec
    return codec


def get_codec(name: str | Codec) -> Codec:
    """The registered codec called ``name`` (a Codec instance passes through); ValueError otherwise."""
    if isinstance(name, Codec):
        return name
    try:
        return CODECS[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; known: {sorted(CODECS)}") from None
