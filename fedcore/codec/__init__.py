"""fedcore.codec: wire encodings of tensors, named in every transport header.

``raw`` sends bytes as they are; ``fp16`` / ``bf16`` send floating tensors in half precision and
restore the original dtype on receipt (integer and bool tensors pass unchanged). The packing-kernel
issue adds ``int8`` and ``int8+noise`` behind the same interface.
"""

from .base import CODECS, Codec, get_codec, register_codec
from .cast import CastCodec, RawCodec

__all__ = ["CODECS", "CastCodec", "Codec", "RawCodec", "get_codec", "register_codec"]
