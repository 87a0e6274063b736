"""raw, fp16 and bf16: codecs that send bytes as they are or cast floating tensors down."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import FLOAT_NAMES, Codec, passthrough_size, register_codec
from .dtypes import DTYPES


class RawCodec(Codec):
    """Bytes as they are (byte-exact for every dtype)."""

    name = "raw"

    def encode(self, tensor: torch.Tensor) -> tuple[list[torch.Tensor], torch.dtype | None]:
        return [tensor], None

    def decode(self, parts: Sequence[torch.Tensor], orig_dtype: torch.dtype | None) -> torch.Tensor:
        return parts[0]

    def check(self, parts: Sequence[tuple[str, tuple[int, ...]]], orig_dtype: str | None) -> int:
        if orig_dtype is not None:
            raise ValueError(f"codec 'raw' does not change dtypes (claimed original {orig_dtype})")
        return passthrough_size(parts, self.name)


class CastCodec(Codec):
    """Floating tensors travel as ``dtype`` (round to nearest even) and come back in their own
    dtype; other tensors travel raw. Halves fp32 traffic at ~3 (fp16) or ~2 (bf16) decimal digits."""

    def __init__(self, name: str, dtype: torch.dtype):
        self.name, self.dtype = name, dtype
        self.wire_name = str(dtype).replace("torch.", "")

    def encode(self, tensor: torch.Tensor) -> tuple[list[torch.Tensor], torch.dtype | None]:
        if not tensor.is_floating_point() or tensor.dtype == self.dtype or tensor.element_size() < 2:
            return [tensor], None
        return [tensor.to(self.dtype)], tensor.dtype

    def decode(self, parts: Sequence[torch.Tensor], orig_dtype: torch.dtype | None) -> torch.Tensor:
        return parts[0] if orig_dtype is None else parts[0].to(orig_dtype)

    def check(self, parts: Sequence[tuple[str, tuple[int, ...]]], orig_dtype: str | None) -> int:
        size = passthrough_size(parts, self.name)
        if orig_dtype is None:
            return size
        dtype, _ = parts[0]
        if dtype != self.wire_name or orig_dtype not in FLOAT_NAMES:
            raise ValueError(f"codec {self.name!r} does not turn {orig_dtype} into {dtype}")
        return size // DTYPES[dtype].itemsize * DTYPES[orig_dtype].itemsize


register_codec(RawCodec())
register_codec(CastCodec("fp16", torch.float16))
register_codec(CastCodec("bf16", torch.bfloat16))
