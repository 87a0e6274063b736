"""fedcore.codec: wire encodings of tensors, named in every transport header.

``raw`` sends bytes as they are; ``fp16`` / ``bf16`` send floating tensors in half precision;
``int8`` / ``fp8`` send per-token codes plus fp32 scales (fedcore.kernels.quant_pack);
``int8+noise`` adds Gaussian noise in the same pass (configure it with ``noisy_int8``). All
restore the original dtype on receipt; integer and bool tensors pass unchanged. ``DTYPES`` /
``DTYPE_NAMES`` are the wire's dtype table (name <-> torch dtype), which fedcore.transport checks headers by.
"""

from .base import CODECS, PART_SEP, Codec, get_codec, register_codec
from .cast import CastCodec, RawCodec
from .dtypes import DTYPE_NAMES, DTYPES
from .quant import QuantCodec, noisy_int8

__all__ = [
    "CODECS",
    "PART_SEP",
    "DTYPES",
    "DTYPE_NAMES",
    "CastCodec",
    "Codec",
    "QuantCodec",
    "RawCodec",
    "get_codec",
    "noisy_int8",
    "register_codec",
]
