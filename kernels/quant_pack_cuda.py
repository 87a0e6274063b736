"""The CUDA C++ quant_pack / dequant (csrc/), compiled on first use with torch.utils.cpp_extension.

Built only where a GPU and nvcc are present (and ``FEDCORE_NO_CUDA_EXT`` is unset); otherwise
``cuda_extension()`` returns None and the dispatcher keeps to Triton. The build lands in torch's
extension cache (``TORCH_EXTENSIONS_DIR``), keyed by a hash of the sources, so an edit rebuilds.
Same noise stream and arithmetic as the Triton kernels; rows up to ``max_hidden`` (32768) elements.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from importlib import resources
from typing import Any

import torch

log = logging.getLogger("fedcore.kernels")

_SOURCES = ("quant_pack_api.cpp", "quant_pack_kernel.cu")


@functools.cache
def cuda_extension() -> Any | None:
    """The compiled extension module, or None where it cannot be built here (reason logged)."""
    if os.environ.get("FEDCORE_NO_CUDA_EXT"):
        return None
    if not torch.cuda.is_available():
        return None
    from torch.utils import cpp_extension

    if cpp_extension.CUDA_HOME is None:
        log.info("quant_pack: no nvcc (CUDA_HOME unset); the CUDA C++ path is off")
        return None
    root = resources.files("fedcore.csrc")
    paths = [str(root / name) for name in _SOURCES]
    digest = hashlib.sha1(b"".join((root / n).read_bytes() for n in (*_SOURCES, "quant_pack.h"))).hexdigest()[:10]
    t0 = time.perf_counter()
    try:
        module = cpp_extension.load(
            name=f"fedcore_quant_pack_{digest}",
            sources=paths,
            extra_include_paths=[str(root)],
            extra_cflags=["-O3"],
            extra_cuda_cflags=["-O3", "-std=c++17"],
            verbose=False,
        )
    except Exception as exc:  # a failed build leaves the Triton path; say why
        log.warning("quant_pack: building the CUDA C++ path failed (%s); using Triton", exc)
        return None
    log.info("quant_pack: CUDA C++ path built in %.1f s", time.perf_counter() - t0)
    return module


def _module() -> Any:
    module = cuda_extension()
    if module is None:
        raise RuntimeError("the CUDA C++ quant_pack is not available here (no GPU, no nvcc, or its build failed)")
    return module


def max_hidden() -> int:
    """Longest row the CUDA C++ path takes."""
    return int(_module().max_hidden)


def pack_variants() -> int:
    """How many launch variants of the pack kernel the build has (0: registers free, 1: capped)."""
    return int(_module().pack_variants)


def pack_cuda(
    x2: torch.Tensor, sigma: torch.Tensor | None, seed: int, offset: int, fmt: str, variant: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (rows, H) and scales (rows,) of ``x2`` (rows, H) CUDA; seed and offset as signed int64."""
    codes, scales = _module().pack(x2, sigma, seed, offset, fmt == "fp8_e4m3", variant)
    return codes, scales


def unpack_cuda(codes: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """codes (rows, H) * scales (rows,) -> (rows, H) in ``dtype``."""
    out = torch.empty(codes.shape, dtype=dtype, device=codes.device)
    _module().unpack(codes, scales, out)
    return out
