"""The wire's dtype table: dtype names on the wire <-> torch dtypes.

It lives in the codec layer because codecs size what a peer claims by it (``Codec.check``) and
fedcore.transport, which sits above codec, validates headers against the same table
(fedcore.transport.wire re-exports it). Byte-exact dtypes only; anything else is refused.
"""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
    "complex64": torch.complex64,
}
for _name in ("float8_e4m3fn", "float8_e5m2"):
    if hasattr(torch, _name):
        DTYPES[_name] = getattr(torch, _name)
del _name
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}

__all__ = ["DTYPES", "DTYPE_NAMES"]
