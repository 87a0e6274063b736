"""int8, int8+noise and fp8: per-token quantized packing (fedcore.kernels.quant_pack) on the wire.

A floating tensor (..., H) travels as two parts: codes (..., H) int8 / float8_e4m3fn and scales
(...,) fp32, i.e. H + 4 bytes per token instead of 2H (bf16) or 4H (fp32); it comes back in its own
dtype. Integer, bool, 0-d and empty tensors travel unchanged. ``int8+noise`` adds FedSEA-LLaMA's
Gaussian noise inside the same kernel, with a fresh OS-drawn seed on every encode; configure its
sigma with ``noisy_int8(std, relative=...)`` (the registered instance only decodes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedcore.kernels import dequant, quant_pack

from .base import FLOAT_NAMES, Codec, passthrough_size, register_codec
from .dtypes import DTYPES

_CODE_DTYPE = {"int8": "int8", "fp8_e4m3": "float8_e4m3fn"}


class QuantCodec(Codec):
    """Per-token ``fmt`` codes + fp32 scales, with optional noise of std ``noise_std``
    (absolute, or times mean |x| of each encoded tensor when ``relative``), each token's row first
    clipped to L2 norm ``clip`` when it is > 0 (the Gaussian mechanism, fused in the kernel)."""

    def __init__(
        self,
        name: str,
        fmt: str,
        *,
        noise_std: float | None = 0.0,
        relative: bool = False,
        seed: int | None = None,
        clip: float = 0.0,
    ):
        self.name, self.fmt, self.noise_std, self.relative, self.clip = name, fmt, noise_std, relative, clip
        self.seed, self._offset = seed, 0  # a fixed seed: one Philox stream, the offset advancing per call

    @property
    def stream_offset(self) -> int:
        """Where a fixed-seed noise stream stands (Philox counters consumed so far); settable, so
        a resumed run's client goes on where the checkpointed one was."""
        return self._offset

    @stream_offset.setter
    def stream_offset(self, offset: int) -> None:
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"stream offset must be an int >= 0, got {offset!r}")
        self._offset = offset

    def _quantizes(self, tensor: torch.Tensor) -> bool:
        return (
            tensor.dtype in (torch.float16, torch.bfloat16, torch.float32) and tensor.dim() >= 1 and tensor.numel() > 0
        )

    def encode(self, tensor: torch.Tensor) -> tuple[list[torch.Tensor], torch.dtype | None]:
        if not self._quantizes(tensor):
            return [tensor], None
        if self.noise_std is None:
            raise ValueError(f"codec {self.name!r} needs a noise std: pass fedcore.codec.noisy_int8(std, relative=...)")
        packed = quant_pack(
            tensor,
            noise_std=self.noise_std,
            relative=self.relative,
            fmt=self.fmt,
            seed=self.seed,
            offset=self._offset,
            clip=self.clip,
        )
        if self.seed is not None:
            self._offset = packed.next_offset
        return [packed.codes, packed.scales], tensor.dtype

    def decode(self, parts: Sequence[torch.Tensor], orig_dtype: torch.dtype | None) -> torch.Tensor:
        if orig_dtype is None:
            return parts[0]
        codes, scales = parts
        return dequant(codes, scales, orig_dtype)

    def check(self, parts: Sequence[tuple[str, tuple[int, ...]]], orig_dtype: str | None) -> int:
        if orig_dtype is None:
            return passthrough_size(parts, self.name)
        if orig_dtype not in ("float32", "float16", "bfloat16") or orig_dtype not in FLOAT_NAMES:
            raise ValueError(f"codec {self.name!r} does not pack {orig_dtype}")
        if len(parts) != 2:
            raise ValueError(f"codec {self.name!r} sends codes and scales, got {len(parts)} parts")
        (code_dtype, shape), (scale_dtype, scale_shape) = parts
        if code_dtype != _CODE_DTYPE[self.fmt] or scale_dtype != "float32":
            raise ValueError(f"codec {self.name!r}: parts must be {_CODE_DTYPE[self.fmt]} and float32")
        if len(shape) < 1 or shape[-1] < 1 or tuple(scale_shape) != tuple(shape[:-1]):
            raise ValueError(f"codec {self.name!r}: scales of shape {scale_shape} do not fit codes of shape {shape}")
        n = 1
        for d in shape:
            n *= d
        return n * DTYPES[orig_dtype].itemsize


def noisy_int8(std: float, *, relative: bool = False, seed: int | None = None, clip: float = 0.0) -> QuantCodec:
    """An ``int8+noise`` encoder with sigma = ``std`` (or ``std * mean|x|`` when ``relative``);
    ``clip`` > 0 bounds each token's L2 norm before the noise (use an absolute ``std``).

    ``seed=None``: a fresh OS-drawn seed on every encode. A fixed ``seed``: one reproducible
    stream whose offset advances past the counters each encode consumed (give clients distinct seeds).
    """
    if not std >= 0:
        raise ValueError(f"noise std must be >= 0, got {std}")
    if not 0 <= clip < float("inf"):
        raise ValueError(f"clip must be finite and >= 0, got {clip}")
    return QuantCodec("int8+noise", "int8", noise_std=std, relative=relative, seed=seed, clip=clip)


register_codec(QuantCodec("int8", "int8"))
register_codec(QuantCodec("int8+noise", "int8", noise_std=None))
register_codec(QuantCodec("fp8", "fp8_e4m3"))
