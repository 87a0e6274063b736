"""The codec interface and registry."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class Codec(ABC):
    """Turns a tensor into the tensor that travels, and back.

    ``encode`` returns (wire tensor, original dtype name or None when unchanged); ``decode``
    gets the wire tensor and that dtype name back. Both must be pure functions of their inputs.
    """

    name: str

    @abstractmethod
    def encode(self, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.dtype | None]: ...

    @abstractmethod
    def decode(self, wire: torch.Tensor, orig_dtype: torch.dtype | None) -> torch.Tensor: ...


CODECS: dict[str, Codec] = {}


def register_codec(codec: Codec) -> Codec:
    """Make ``codec`` available by its name; names are unique."""
    if codec.name in CODECS:
        raise ValueError(f"codec {codec.name!r} is already registered")
    CODECS[codec.name] = codec
    return codec


def get_codec(name: str) -> Codec:
    """The registered codec called ``name``; ``ValueError`` lists the known ones otherwise."""
    try:
        return CODECS[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; known: {sorted(CODECS)}") from None
