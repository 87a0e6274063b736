"""raw, fp16 and bf16: codecs that send bytes as they are or cast floating tensors down."""

from __future__ import annotations

import torch

from .base import Codec, register_codec


class RawCodec(Codec):
    """Bytes as they are (byte-exact for every dtype)."""

    name = "raw"

    def encode(self, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.dtype | None]:
        return tensor, None

    def decode(self, wire: torch.Tensor, orig_dtype: torch.dtype | None) -> torch.Tensor:
        return wire


class CastCodec(Codec):
    """Floating tensors travel as ``dtype`` (round to nearest even) and come back in their own
    dtype; other tensors travel raw. Halves fp32 traffic at ~3 (fp16) or ~2 (bf16) decimal digits."""

    def __init__(self, name: str, dtype: torch.dtype):
        self.name, self.dtype = name, dtype

    def encode(self, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.dtype | None]:
        if not tensor.is_floating_point() or tensor.dtype == self.dtype or tensor.element_size() < 2:
            return tensor, None
        return tensor.to(self.dtype), tensor.dtype

    def decode(self, wire: torch.Tensor, orig_dtype: torch.dtype | None) -> torch.Tensor:
        return wire if orig_dtype is None else wire.to(orig_dtype)


register_codec(RawCodec())
register_codec(CastCodec("fp16", torch.float16))
register_codec(CastCodec("bf16", torch.bfloat16))
