"""Plain references for quant_pack (the definition the kernels are tested against) and the CPU path.

``philox_normals`` reproduces the kernels' noise stream in numpy (uint64 arithmetic, float64
Box-Muller rounded to fp32): the GPU's fast log/sin/cos differ from it by ~1e-6.
``pack_reference`` / ``unpack_reference`` spell the packing out in fp32 torch on the CPU, with the
per-row divisions done in numpy float32 (IEEE-rounded, as the kernels' ``div.rn``; torch's
scalar division may multiply by a reciprocal instead).

``pack_cpu`` is what ``quant_pack`` runs on a CPU without the Triton interpreter: the reference's
own row arithmetic (``_row_scales``, ``_codes``) in row chunks that stay in cache. Its noise comes
from torch's CPU generator seeded by (seed, offset): reproducible for a fixed pair, but not the GPU's Philox numbers.
"""

from __future__ import annotations

import numpy as np
import torch

from .quant_pack import CODE_DTYPE, QMAX, TINY, counters_per_row

_M32 = np.uint64(0xFFFFFFFF)
_MUL_A, _MUL_B = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_KEY_A, _KEY_B = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)


def philox4x32(counters: np.ndarray, seed: int) -> tuple[np.ndarray, ...]:
    """Philox4x32-10 of 64-bit ``counters`` (as (lo, hi, 0, 0)) under the 64-bit key ``seed``."""
    ctr = counters.astype(np.uint64)
    c0, c1 = ctr & _M32, ctr >> np.uint64(32)
    c2 = np.zeros_like(c0)
    c3 = np.zeros_like(c0)
    k0, k1 = np.uint64(seed & 0xFFFFFFFF), np.uint64((seed >> 32) & 0xFFFFFFFF)
    for _ in range(10):
        p_b, p_a = _MUL_B * c2, _MUL_A * c0  # exact: both factors < 2^32
        c0, c1, c2, c3 = (p_b >> np.uint64(32)) ^ c1 ^ k0, p_b & _M32, (p_a >> np.uint64(32)) ^ c3 ^ k1, p_a & _M32
        k0, k1 = (k0 + _KEY_A) & _M32, (k1 + _KEY_B) & _M32
    return c0, c1, c2, c3


def _uniform(bits: np.ndarray) -> np.ndarray:
    return (bits >> np.uint64(8)).astype(np.float64) * 2.0**-24 + 2.0**-25


def philox_normals(rows: int, hidden: int, seed: int, offset: int) -> torch.Tensor:
    """The noise field of the kernels at (seed, offset): (rows, hidden) fp32 N(0, 1)."""
    q = counters_per_row(hidden)
    counters = offset + np.arange(rows, dtype=np.uint64)[:, None] * np.uint64(q) + np.arange(q, dtype=np.uint64)
    r0, r1, r2, r3 = philox4x32(counters, seed)
    rad_a, th_a = np.sqrt(-2.0 * np.log(_uniform(r0))), 2 * np.pi * _uniform(r1)
    rad_b, th_b = np.sqrt(-2.0 * np.log(_uniform(r2))), 2 * np.pi * _uniform(r3)
    quarters = [rad_a * np.cos(th_a), rad_a * np.sin(th_a), rad_b * np.cos(th_b), rad_b * np.sin(th_b)]
    field = np.concatenate(quarters, axis=1)[:, :hidden]  # quarter k holds columns kQ .. kQ + Q - 1
    return torch.from_numpy(field.astype(np.float32))


def _row_scales(y: torch.Tensor, qmax: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inverse (rows, 1), scale (rows,), non-finite row mask (rows,)) of fp32 rows ``y``."""
    raw = y.abs().amax(dim=-1) if y.shape[-1] else y.new_zeros(y.shape[0])  # amax propagates NaN and inf
    bad = ~torch.isfinite(raw)  # a row with a non-finite value: its absmax does not matter
    a = torch.where(bad, 0.0, raw).numpy()
    with np.errstate(divide="ignore"):
        big = a >= np.float32(TINY)
        inv = np.where(big, np.float32(qmax) / np.maximum(a, np.float32(TINY)), np.float32(0)).astype(np.float32)
    scale = torch.from_numpy(np.where(big, a / np.float32(qmax), np.float32(0)).astype(np.float32))
    return torch.from_numpy(inv)[:, None], torch.where(bad, torch.nan, scale), bad


def _codes(y: torch.Tensor, inv: torch.Tensor, bad: torch.Tensor, fmt: str, *, inplace: bool = False) -> torch.Tensor:
    """Codes of fp32 rows ``y`` (overwritten when ``inplace``: only for a private copy)."""
    qmax = QMAX[fmt]
    q = (y.mul_(inv) if inplace else y * inv).clamp_(-qmax, qmax)
    if fmt == "int8":
        q = q.round_()  # round half to even, as the kernels
    q[bad] = 0.0
    return q.to(CODE_DTYPE[fmt])


def clip_factors(y: torch.Tensor, clip: float) -> torch.Tensor:
    """(rows, 1) fp32 min(1, clip / ||row||_2) of fp32 rows ``y``: 1 for a NaN or infinite norm
    (such a row stays non-finite). Norm and division in float64, rounded."""
    norm = y.double().square().sum(dim=-1).sqrt()
    big = (norm > clip) & torch.isfinite(norm)
    return torch.where(big, clip / torch.where(big, norm, 1.0), 1.0).float()[:, None]


def pack_reference(
    x: torch.Tensor, *, noise: torch.Tensor | None = None, sigma: float = 0.0, fmt: str = "int8", clip: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference pack of ``x`` (..., H): each row scaled to L2 norm at most ``clip`` (when > 0),
    then ``sigma * noise`` ((rows, H) fp32) added.

    Returns codes (..., H) int8 / float8_e4m3fn and scales (...,) fp32, on the CPU.
    """
    y = x.detach().cpu().reshape(-1, x.shape[-1]).float()
    if clip > 0:
        y = y * clip_factors(y, clip)
    if noise is not None and sigma:
        y = y + noise.cpu().float() * float(np.float32(sigma))
    inv, scale, bad = _row_scales(y, QMAX[fmt])
    return _codes(y, inv, bad, fmt).reshape(x.shape), scale.reshape(x.shape[:-1])


def unpack_reference(codes: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """codes * scale per row, computed in fp32, returned in ``dtype``."""
    return (codes.float() * scales.float()[..., None]).to(dtype)


def _generator(seed: int, offset: int) -> torch.Generator:
    mixed = (seed * 0x9E3779B97F4A7C15 + offset * 0xBF58476D1CE4E5B9) & 0x7FFFFFFFFFFFFFFF
    return torch.Generator().manual_seed(mixed)


CHUNK_BYTES = 1 << 22  # fp32 bytes per chunk of the CPU path: 64-row chunks cost 6x more at hidden 128


def pack_cpu(
    x2: torch.Tensor,
    sigma: torch.Tensor | None,
    seed: int,
    offset: int,
    fmt: str,
    *,
    chunk_rows: int = 0,
    clip: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The CPU path of quant_pack on ``x2`` (rows, H): codes (rows, H) and scales (rows,) fp32,
    ``chunk_rows`` rows at a time (0: about ``CHUNK_BYTES`` of fp32, at least 64 rows); rows
    clipped to L2 norm ``clip`` first when it is > 0."""
    rows, hidden = x2.shape
    chunk_rows = chunk_rows or max(64, CHUNK_BYTES // (4 * max(hidden, 1)))
    codes = torch.empty(rows, hidden, dtype=CODE_DTYPE[fmt])
    scales = torch.empty(rows, dtype=torch.float32)
    gen = _generator(seed, offset) if sigma is not None else None
    sigma_cpu = sigma.cpu() if sigma is not None else None
    for start in range(0, rows, chunk_rows):  # the reference's arithmetic, a cache-sized chunk at a time
        y = x2[start : start + chunk_rows].to(torch.float32, copy=True)  # never write into x
        if clip > 0:
            y.mul_(clip_factors(y, clip))
        if gen is not None and sigma_cpu is not None:
            y.add_(torch.randn(y.shape, generator=gen).mul_(sigma_cpu))
        inv, scale, bad = _row_scales(y, QMAX[fmt])
        codes[start : start + chunk_rows] = _codes(y, inv, bad, fmt, inplace=True)
        scales[start : start + chunk_rows] = scale
    return codes, scales
