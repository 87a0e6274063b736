"""Public quant_pack / dequant_unpack: argument checks, noise seeding, and the choice of implementation.

Implementations: ``triton`` (the primary path; on CPU only under TRITON_INTERPRET=1), ``cuda``
(csrc/, built on first use where nvcc and a GPU are present), ``torch`` (the CPU path). With
``impl="auto"`` a CPU tensor takes ``torch``; a CUDA tensor takes whichever of ``triton`` and
``cuda`` was measured faster on this device for the call's (dtype, H, fmt, noise) class, timed once
on the first such call. ``choices()`` says what was picked and the times that picked it.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import quant_pack as tri
from .quant_pack_ref import pack_cpu

log = logging.getLogger("fedcore.kernels")

FORMATS = ("int8", "fp8_e4m3")
IMPLS = ("auto", "triton", "cuda", "torch")
_FLOATS = (torch.float16, torch.bfloat16, torch.float32)


@dataclass(frozen=True)
class Packed:
    """A packed tensor: ``codes`` (..., H) int8 or float8_e4m3fn, ``scales`` (...,) fp32.

    ``shape``/``dtype``: the input's. ``seed``/``offset``: the Philox stream the noise came from
    (``next_offset`` continues it); ``sigma``: the absolute noise std used (fp32 scalar tensor on
    the input's device), None without noise. ``impl``: the implementation that packed it.
    """

    codes: torch.Tensor
    scales: torch.Tensor
    shape: torch.Size
    dtype: torch.dtype
    fmt: str
    seed: int
    offset: int
    next_offset: int
    sigma: torch.Tensor | None
    impl: str

    @property
    def nbytes(self) -> int:
        """Bytes of codes + scales (what travels)."""
        return self.codes.numel() * self.codes.element_size() + self.scales.numel() * 4


def fresh_seed() -> int:
    """A 62-bit seed from the OS: distinct per call, per client and per process."""
    return secrets.randbits(62)


def _check(x: torch.Tensor, fmt: str, noise_std: float, offset: int, clip: float, relative: bool) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOATS:
        raise TypeError(f"x must be fp16, bf16 or fp32, got {x.dtype}")
    if x.dim() < 1 or x.shape[-1] < 1:
        raise ValueError(f"x must be (..., H) with H >= 1, got shape {tuple(x.shape)}")
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if not (noise_std >= 0.0) or noise_std == float("inf"):
        raise ValueError(f"noise_std must be finite and >= 0, got {noise_std}")
    if not (clip >= 0.0) or clip == float("inf"):
        raise ValueError(f"clip must be finite and >= 0 (0: no clipping), got {clip}")
    if clip > 0 and relative and noise_std > 0:
        raise ValueError("clip with relative noise is not the Gaussian mechanism: give an absolute noise_std")
    if offset < 0 or offset >= 2**64:
        raise ValueError(f"offset must be in [0, 2^64), got {offset}")
    if fmt == "fp8_e4m3" and x.is_cuda and torch.cuda.get_device_capability(x.device) < (8, 9):
        raise ValueError("fmt='fp8_e4m3' needs a GPU with sm >= 89 (Ada or Hopper); use fmt='int8'")


_SIGMAS: dict[tuple[str, float], torch.Tensor] = {}


def _sigma(x: torch.Tensor, noise_std: float, relative: bool) -> torch.Tensor | None:
    if noise_std == 0.0:
        return None
    if not relative:  # cached: a fresh host-to-device copy per call would cost a sync
        key = (str(x.device), noise_std)
        if key not in _SIGMAS:
            if len(_SIGMAS) > 64:
                _SIGMAS.clear()
            _SIGMAS[key] = torch.tensor([noise_std], dtype=torch.float32, device=x.device)
        return _SIGMAS[key]
    # one extra pass over x, on the device, no host sync: sigma = noise_std * mean |x| over the
    # finite elements (a NaN row must not turn every other row's noise into NaN)
    finite = torch.isfinite(x)
    count = finite.sum().clamp_min(1).to(torch.float32)
    mean_abs = torch.where(finite, x, 0).abs().sum(dtype=torch.float32) / count
    return (mean_abs * noise_std).reshape(1)


def quant_pack(
    x: torch.Tensor,
    *,
    noise_std: float = 0.0,
    relative: bool = False,
    seed: int | None = None,
    offset: int = 0,
    fmt: str = "int8",
    impl: str = "auto",
    clip: float = 0.0,
) -> Packed:
    """Add Gaussian noise to ``x`` (..., H) and pack it per token (row of H) in one pass.

    ``clip`` > 0 first scales each row of ``x`` to an L2 norm of at most ``clip`` (in x's units):
    with an absolute ``noise_std = z * clip`` that is the Gaussian mechanism per token, the int8
    rounding after it being post-processing. The CUDA C++ kernels do not clip, so ``impl="auto"``
    takes Triton on a GPU when ``clip`` is set.

    sigma = ``noise_std`` when ``relative`` is False (absolute, in x's units), else
    ``noise_std * mean(|x|)`` over the finite elements of the whole call (FedSEA-LLaMA quotes mean |h_A| ~ 0.02 with one
    client block, so a relative sigma carries across models). Noise uses the Philox stream at
    (``seed``, ``offset``); ``seed=None`` draws a fresh seed from the OS, so every call and every
    client gets independent noise; fix both (and ``impl``: "auto" may pick Triton on one machine and
    CUDA C++ on another, whose fast log/sin differ in the last bits) to reproduce a call bit for bit.
    The CPU path reproduces its own stream, not the GPU's. Chain calls on one stream with
    ``offset=previous.next_offset``.

    Per row: scale = absmax / 127 (fp32), codes = round-half-even(y * 127 / absmax) in int8
    (``fmt="fp8_e4m3"``: /448 and an RNE cast to float8_e4m3fn, GPU sm >= 89 or CPU). A row of
    zeros (or with absmax below 1e-35) gets scale 0; a row with NaN or +-inf gets scale NaN, and
    unpacks to all NaN.
    """
    _check(x, fmt, noise_std, offset, clip, relative)
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if clip > 0 and impl == "cuda":
        raise ValueError("impl='cuda' does not clip; use impl='triton' (or 'auto') with clip")
    seed = fresh_seed() if seed is None else int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2^64), got {seed}")
    x2 = x.detach().reshape(-1, x.shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    sigma = _sigma(x2, noise_std, relative)
    chosen = _choose(x2, sigma, fmt, impl if clip == 0 or impl != "auto" or not x2.is_cuda else "triton")
    seed64 = seed - 2**64 if seed >= 2**63 else seed  # the kernels take a signed 64-bit key
    offset64 = offset - 2**64 if offset >= 2**63 else offset
    if chosen == "torch":
        codes, scales = pack_cpu(x2, sigma, seed, offset, fmt, clip=clip)
    elif chosen == "cuda":
        from .quant_pack_cuda import pack_cuda

        codes, scales = pack_cuda(x2, sigma, seed64, offset64, fmt, _VARIANTS.get(_key(x2, sigma, fmt), 0))
    else:
        codes, scales = tri.pack_triton(x2, sigma, seed64, offset64, fmt, clip)
    q = tri.counters_per_row(x.shape[-1])
    return Packed(
        codes=codes.reshape(x.shape),
        scales=scales.reshape(x.shape[:-1]),
        shape=x.shape,
        dtype=x.dtype,
        fmt=fmt,
        seed=seed,
        offset=offset,
        next_offset=(offset + x2.shape[0] * q) % 2**64,
        sigma=sigma,
        impl=chosen,
    )


def dequant_unpack(packed: Packed, dtype: torch.dtype | None = None, *, impl: str = "auto") -> torch.Tensor:
    """codes * scale per row, as a (..., H) tensor in ``dtype`` (default: the packed input's)."""
    if not isinstance(packed, Packed):
        raise TypeError(f"dequant_unpack takes a Packed, got {type(packed).__name__}")
    return dequant(packed.codes, packed.scales, dtype or packed.dtype, impl=impl)


def dequant(codes: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype, *, impl: str = "auto") -> torch.Tensor:
    """codes (..., H) int8/float8_e4m3fn times scales (...,) fp32 -> (..., H) in ``dtype``."""
    if codes.dtype not in (torch.int8, torch.float8_e4m3fn):
        raise TypeError(f"codes must be int8 or float8_e4m3fn, got {codes.dtype}")
    if scales.dtype != torch.float32 or tuple(scales.shape) != tuple(codes.shape[:-1]):
        raise ValueError(
            f"scales must be fp32 of shape {tuple(codes.shape[:-1])}, got {scales.dtype} {tuple(scales.shape)}"
        )
    if dtype not in _FLOATS:
        raise TypeError(f"dtype must be fp16, bf16 or fp32, got {dtype}")
    if codes.device != scales.device:
        raise ValueError(f"codes on {codes.device} but scales on {scales.device}")
    if codes.dim() < 1 or codes.shape[-1] < 1:
        raise ValueError(f"codes must be (..., H) with H >= 1, got shape {tuple(codes.shape)}")
    c2, s1 = codes.reshape(-1, codes.shape[-1]).contiguous(), scales.reshape(-1).contiguous()
    use = impl if impl != "auto" else ("torch" if not codes.is_cuda else "triton")
    if use == "torch" or (use == "triton" and not _triton_runs(codes)):
        out = (c2.float() * s1[:, None]).to(dtype)
    elif use == "cuda":
        from .quant_pack_cuda import unpack_cuda

        out = unpack_cuda(c2, s1, dtype)
    else:
        out = tri.unpack_triton(c2, s1, dtype)
    return out.reshape(codes.shape)


def _triton_runs(x: torch.Tensor) -> bool:
    return x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


_CHOICES: dict[tuple, tuple[str, dict[str, float]]] = {}
_VARIANTS: dict[tuple, int] = {}  # the CUDA launch variant measured fastest per key


def choices() -> dict[str, dict]:
    """What ``impl="auto"`` picked per (device, dtype, H bucket, fmt, noise), with the ms that decided."""
    return {"/".join(map(str, k)): {"impl": v[0], "ms": v[1]} for k, v in _CHOICES.items()}


def _choose(x2: torch.Tensor, sigma: torch.Tensor | None, fmt: str, impl: str) -> str:
    if impl != "auto":
        if impl == "triton" and not _triton_runs(x2):
            raise ValueError("impl='triton' on a CPU tensor needs TRITON_INTERPRET=1 (or use impl='torch')")
        if impl == "cuda" and not x2.is_cuda:
            raise ValueError("impl='cuda' needs a CUDA tensor")
        if impl == "torch" and x2.is_cuda:
            raise ValueError("impl='torch' is the CPU path; move x to the CPU or use 'auto'")
        if fmt == "fp8_e4m3" and impl == "triton" and not x2.is_cuda:
            raise ValueError("fp8 in the Triton interpreter is not supported; use impl='torch' on the CPU")
        return impl
    if not x2.is_cuda:
        return "torch"
    key = _key(x2, sigma, fmt)
    if key not in _CHOICES:
        winner, times = _race(x2, sigma, fmt)
        if winner.startswith("cuda"):
            _VARIANTS[key] = int(winner.split("/v")[1])
        _CHOICES[key] = (winner.split("/")[0], times)
        log.info("quant_pack %s: using %s (%s)", "/".join(map(str, key)), winner, times)
    return _CHOICES[key][0]


def _key(x2: torch.Tensor, sigma: torch.Tensor | None, fmt: str) -> tuple:
    return (str(x2.device), str(x2.dtype).replace("torch.", ""), _bucket(x2.shape[1]), fmt, sigma is not None)


def _bucket(hidden: int) -> int:
    return 1 << max(0, (hidden - 1).bit_length())


def _race(x2: torch.Tensor, sigma: torch.Tensor | None, fmt: str) -> tuple[str, dict[str, float]]:
    """Time triton and each cuda variant on this call's input (3 runs each after one warm-up, best
    kept); cuda only if it builds and takes rows this long. Returns ("triton" | "cuda/v<k>", ms)."""
    from .quant_pack_cuda import cuda_extension

    runners: dict[str, Callable[[], object]] = {"triton": lambda: tri.pack_triton(x2, sigma, 1, 0, fmt)}
    if cuda_extension() is not None:
        from .quant_pack_cuda import max_hidden, pack_cuda, pack_variants

        if x2.shape[1] <= max_hidden():
            for v in range(pack_variants()):
                runners[f"cuda/v{v}"] = functools.partial(pack_cuda, x2, sigma, 1, 0, fmt, v)
    times = {}
    for name, run in runners.items():
        try:
            run()
            torch.cuda.synchronize(x2.device)
        except RuntimeError as exc:  # e.g. a row too long for this GPU's shared memory
            log.warning("quant_pack: %s does not run here (%s); left out of the race", name, exc)
            continue
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            run()
            torch.cuda.synchronize(x2.device)
            best = min(best, (time.perf_counter() - t0) * 1e3)
        times[name] = round(best, 4)
    return min(times, key=times.__getitem__), times
