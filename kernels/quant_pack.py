"""Triton: Gaussian noise fused with per-token quantized packing of hidden states, and the inverse.

Layout of the noise stream (shared with the CUDA C++ kernels and the numpy reference in
``quant_pack_ref``): a row of H elements uses Q = ceil(H / 4) Philox4x32-10 counters
``offset + row * Q + i`` (i < Q) under the 64-bit key ``seed``; the four normals of counter i go to
columns i, Q + i, 2Q + i, 3Q + i (Box-Muller on two pairs of 24-bit uniforms in (0, 1)). Columns
at or past H are drawn and dropped, so a call consumes ``rows * Q`` counters.

Pack, per row: with a clip bound C > 0 (``CLIP``), x is first scaled by min(1, C / ||x||_2) so the
row's L2 norm is at most C (the Gaussian mechanism's per-token clipping; a non-finite row stays
non-finite); then y = x + sigma * n (fp32); absmax = max |y|; scale = absmax / QMAX (QMAX 127 for
int8, 448 for fp8 e4m3); codes = round-to-nearest-even(y * (QMAX / absmax)) clamped to
[-QMAX, QMAX]. A row of zeros, or with absmax below TINY = 1e-35 (where QMAX / absmax would
overflow fp32), gets scale 0 and codes 0. A row holding NaN or +-inf gets scale NaN
and codes 0, so it unpacks to NaN everywhere: a non-finite value is never made finite.

Tiling: one program per row. Rows of up to ``SINGLE_PASS_MAX`` elements are held in registers
(one read of x); longer rows take two passes (the second re-reads x and regenerates the noise).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .interpreter import launch_guard

# Rows up to 16384 elements stay in registers (4 quarter blocks of at most 4096, 16 warps).
SINGLE_PASS_MAX = 16384
TWO_PASS_BLOCK_Q = 1024  # quarter-block width of the two-pass loop
QMAX = {"int8": 127.0, "fp8_e4m3": 448.0}
TINY = 1e-35  # rows with a smaller absmax pack as zeros (the kernels spell the literal out)
CODE_DTYPE = {"int8": torch.int8, "fp8_e4m3": torch.float8_e4m3fn}

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
if not _INTERPRET:
    from triton.language.extra import libdevice
else:  # libdevice calls fail in the interpreter; the kernels use the add-and-subtract rounding there
    libdevice = None


@triton.jit
def _uniform(bits):
    """uint32 -> fp32 in (0, 1): the top 24 bits, centred in their bucket (never 0, never 1).
    The mask keeps the result right whether the shift is logical or arithmetic."""
    top = ((bits >> 8) & 0xFFFFFF).to(tl.int32)
    return top.to(tl.float32) * 5.960464477539063e-08 + 2.9802322387695312e-08


@triton.jit
def _normals4(seed, counter):
    """Four blocks of N(0, 1) fp32 from the 64-bit Philox counters ``counter`` (int64 block):
    Triton's Philox4x32-10 of (lo, hi, 0, 0) under the key (seed lo, seed hi)."""
    lo = counter.to(tl.uint32)
    hi = (counter >> 32).to(tl.uint32)
    zero = lo * 0
    r0, r1, r2, r3 = tl.philox(seed, lo, hi, zero, zero)
    rad_a = tl.sqrt(-2.0 * tl.log(_uniform(r0)))
    th_a = 6.283185307179586 * _uniform(r1)
    rad_b = tl.sqrt(-2.0 * tl.log(_uniform(r2)))
    th_b = 6.283185307179586 * _uniform(r3)
    return rad_a * tl.cos(th_a), rad_a * tl.sin(th_a), rad_b * tl.cos(th_b), rad_b * tl.sin(th_b)


@triton.jit
def _noise_or_zeros(seed, counter, HAS_NOISE: tl.constexpr, BQ: tl.constexpr):
    if HAS_NOISE:
        return _normals4(seed, counter)
    zero = tl.zeros((BQ,), dtype=tl.float32)
    return zero, zero, zero, zero


@triton.jit
def _rne(q, USE_RINT: tl.constexpr):
    """Round to nearest even (|q| < 2^22)."""
    if USE_RINT:
        return libdevice.rint(q)
    return (q + 12582912.0) - 12582912.0


@triton.jit
def _quarter(x_row, cols, H, n, sigma, factor, HAS_NOISE: tl.constexpr, CLIP: tl.constexpr):
    """Load one quarter block of a row as fp32, scaled by the clip ``factor`` and noise added."""
    y = tl.load(x_row + cols, mask=cols < H, other=0.0).to(tl.float32)
    if CLIP:
        y = y * factor
    if HAS_NOISE:
        y = y + sigma * n
    return y


@triton.jit
def _squares(x_row, cols, H):
    """Per lane: x^2 in fp32 (0 past H), for the row's L2 norm."""
    x = tl.load(x_row + cols, mask=cols < H, other=0.0).to(tl.float32)
    return x * x


@triton.jit
def _clip_factor(sum_sq, clip):
    """min(1, clip / ||x||) with IEEE division; 1 for a NaN or infinite norm (such a row stays
    non-finite and packs as NaN)."""
    norm = tl.sqrt_rn(sum_sq)
    big = (norm > clip) & (norm < float("inf"))
    safe = tl.where(big, norm, 1.0)
    return tl.where(big, tl.fdiv(safe * 0.0 + clip, safe, ieee_rounding=True), 1.0)


@triton.jit
def _mag(y, cols, lim):
    """Per lane: (|y| if finite else 0, 1 if y is NaN or +-inf else 0); lanes at or past lim give (0, 0).
    Quarters are combined lane-wise first, so a row costs two block reductions, not eight."""
    mag = tl.where(cols < lim, tl.abs(y), 0.0)
    finite = mag < float("inf")
    return tl.where(finite, mag, 0.0), tl.where(finite, 0, 1)


@triton.jit
def _inverse(absmax, QMAX: tl.constexpr):
    """QMAX / absmax with IEEE rounding (fp32 '/' is div.full on the GPU); 0 for a row whose absmax
    is below TINY (all zeros, or so small that QMAX / absmax would overflow fp32)."""
    safe = tl.maximum(absmax, 1e-35)
    return tl.where(absmax >= 1e-35, tl.fdiv(safe * 0.0 + QMAX, safe, ieee_rounding=True), 0.0)


@triton.jit
def _store_codes(codes_row, cols, H, y, inv, bad, QMAX: tl.constexpr, FP8: tl.constexpr, USE_RINT: tl.constexpr):
    q = y * inv
    if FP8:
        q = tl.minimum(tl.maximum(q, -QMAX), QMAX)
        q = tl.where(bad != 0, 0.0, q)
        tl.store(codes_row + cols, q.to(tl.float8e4nv), mask=cols < H)
    else:
        q = tl.minimum(tl.maximum(_rne(q, USE_RINT), -QMAX), QMAX)
        q = tl.where(bad != 0, 0.0, q)
        tl.store(codes_row + cols, q.to(tl.int8), mask=cols < H)


@triton.jit(do_not_specialize=["seed", "offset"])
def _pack_kernel(
    x_ptr, codes_ptr, scales_ptr, sigma_ptr, clip, seed, offset, H, Q, stride_row,
    HAS_NOISE: tl.constexpr, FP8: tl.constexpr, QMAX: tl.constexpr, USE_RINT: tl.constexpr,
    SINGLE: tl.constexpr, BQ: tl.constexpr, CLIP: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_row
    codes_row = codes_ptr + row * H
    sigma = 0.0
    if HAS_NOISE:
        sigma = tl.load(sigma_ptr)
    base = offset + row * Q
    i = tl.arange(0, BQ).to(tl.int64)
    factor = 1.0
    if CLIP:  # one more read of the row (from cache) for its L2 norm
        sq = tl.zeros((BQ,), dtype=tl.float32)
        for start in range(0, Q, BQ):
            j = start + i
            lim = tl.where(j < Q, H, 0)
            sq += _squares(x_row, j, lim) + _squares(x_row, Q + j, lim)
            sq += _squares(x_row, 2 * Q + j, lim) + _squares(x_row, 3 * Q + j, lim)
        factor = _clip_factor(tl.sum(sq, axis=0), clip)
    if SINGLE:  # the whole row in registers: one read of x
        n0, n1, n2, n3 = _noise_or_zeros(seed, base + i, HAS_NOISE, BQ)
        lim = tl.where(i < Q, H, 0)  # lanes past Q in a quarter belong to the next quarter
        y0 = _quarter(x_row, i, lim, n0, sigma, factor, HAS_NOISE, CLIP)
        y1 = _quarter(x_row, Q + i, lim, n1, sigma, factor, HAS_NOISE, CLIP)
        y2 = _quarter(x_row, 2 * Q + i, lim, n2, sigma, factor, HAS_NOISE, CLIP)
        y3 = _quarter(x_row, 3 * Q + i, lim, n3, sigma, factor, HAS_NOISE, CLIP)
        m0, b0 = _mag(y0, i, lim)
        m1, b1 = _mag(y1, Q + i, lim)
        m2, b2 = _mag(y2, 2 * Q + i, lim)
        m3, b3 = _mag(y3, 3 * Q + i, lim)
        absmax = tl.max(tl.maximum(tl.maximum(m0, m1), tl.maximum(m2, m3)), axis=0)
        bad = tl.max(b0 | b1 | b2 | b3, axis=0)
        inv = _inverse(absmax, QMAX)
        _store_codes(codes_row, i, lim, y0, inv, bad, QMAX, FP8, USE_RINT)
        _store_codes(codes_row, Q + i, lim, y1, inv, bad, QMAX, FP8, USE_RINT)
        _store_codes(codes_row, 2 * Q + i, lim, y2, inv, bad, QMAX, FP8, USE_RINT)
        _store_codes(codes_row, 3 * Q + i, lim, y3, inv, bad, QMAX, FP8, USE_RINT)
    else:  # long rows: statistics first, then regenerate the noise and store
        m_acc = tl.zeros((BQ,), dtype=tl.float32)
        b_acc = tl.zeros((BQ,), dtype=tl.int32)
        for start in range(0, Q, BQ):
            j = start + i
            n0, n1, n2, n3 = _noise_or_zeros(seed, base + j, HAS_NOISE, BQ)
            lim = tl.where(j < Q, H, 0)
            m0, b0 = _mag(_quarter(x_row, j, lim, n0, sigma, factor, HAS_NOISE, CLIP), j, lim)
            m1, b1 = _mag(_quarter(x_row, Q + j, lim, n1, sigma, factor, HAS_NOISE, CLIP), Q + j, lim)
            m2, b2 = _mag(_quarter(x_row, 2 * Q + j, lim, n2, sigma, factor, HAS_NOISE, CLIP), 2 * Q + j, lim)
            m3, b3 = _mag(_quarter(x_row, 3 * Q + j, lim, n3, sigma, factor, HAS_NOISE, CLIP), 3 * Q + j, lim)
            m_acc = tl.maximum(m_acc, tl.maximum(tl.maximum(m0, m1), tl.maximum(m2, m3)))
            b_acc = b_acc | b0 | b1 | b2 | b3
        absmax = tl.max(m_acc, axis=0)
        bad = tl.max(b_acc, axis=0)
        inv = _inverse(absmax, QMAX)
        for start in range(0, Q, BQ):
            j = start + i
            n0, n1, n2, n3 = _noise_or_zeros(seed, base + j, HAS_NOISE, BQ)
            lim = tl.where(j < Q, H, 0)
            y0 = _quarter(x_row, j, lim, n0, sigma, factor, HAS_NOISE, CLIP)
            y1 = _quarter(x_row, Q + j, lim, n1, sigma, factor, HAS_NOISE, CLIP)
            y2 = _quarter(x_row, 2 * Q + j, lim, n2, sigma, factor, HAS_NOISE, CLIP)
            y3 = _quarter(x_row, 3 * Q + j, lim, n3, sigma, factor, HAS_NOISE, CLIP)
            _store_codes(codes_row, j, lim, y0, inv, bad, QMAX, FP8, USE_RINT)
            _store_codes(codes_row, Q + j, lim, y1, inv, bad, QMAX, FP8, USE_RINT)
            _store_codes(codes_row, 2 * Q + j, lim, y2, inv, bad, QMAX, FP8, USE_RINT)
            _store_codes(codes_row, 3 * Q + j, lim, y3, inv, bad, QMAX, FP8, USE_RINT)
    scale = tl.fdiv(absmax, absmax * 0.0 + QMAX, ieee_rounding=True)  # IEEE division: '/' is approximate
    scale = tl.where(absmax >= 1e-35, scale, 0.0)
    tl.store(scales_ptr + row, tl.where(bad != 0, float("nan"), scale))


@triton.jit
def _unpack_kernel(codes_ptr, scales_ptr, out_ptr, H, BH: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    scale = tl.load(scales_ptr + row)
    for start in range(0, H, BH):
        cols = start + tl.arange(0, BH)
        q = tl.load(codes_ptr + row * H + cols, mask=cols < H).to(tl.float32)  # no 'other': fp8 has no int cast
        tl.store(out_ptr + row * H + cols, (q * scale).to(out_ptr.dtype.element_ty), mask=cols < H)


@triton.jit(do_not_specialize=["seed", "offset"])
def _noise_kernel(out_ptr, seed, offset, H, Q, BQ: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    for start in range(0, Q, BQ):
        j = (start + tl.arange(0, BQ)).to(tl.int64)
        n0, n1, n2, n3 = _normals4(seed, offset + row * Q + j)
        lim = tl.where(j < Q, H, 0)
        tl.store(out_ptr + row * H + j, n0, mask=j < lim)
        tl.store(out_ptr + row * H + Q + j, n1, mask=Q + j < lim)
        tl.store(out_ptr + row * H + 2 * Q + j, n2, mask=2 * Q + j < lim)
        tl.store(out_ptr + row * H + 3 * Q + j, n3, mask=3 * Q + j < lim)


# On the GPU the warp count is tuned per (H, flags) on first use (4 / 8 / 16 warps per row).
_pack_tuned = triton.autotune(
    configs=[triton.Config({}, num_warps=w) for w in (4, 8, 16)], key=["H", "HAS_NOISE", "FP8", "SINGLE", "CLIP"]
)(_pack_kernel)


def counters_per_row(hidden: int) -> int:
    """Philox counters one row of ``hidden`` elements consumes (Q = ceil(H / 4))."""
    return (hidden + 3) // 4


def _warps(block: int) -> int:
    return max(1, min(16, block // 256))


def pack_triton(
    x2: torch.Tensor, sigma: torch.Tensor | None, seed: int, offset: int, fmt: str, clip: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the pack kernel on ``x2`` (rows, H) with unit stride along H.

    ``sigma`` is a 1-element fp32 tensor on x's device (None: no noise); ``clip`` > 0 bounds each
    row's L2 norm before the noise (0: no clipping). Returns codes (rows, H) int8 /
    float8_e4m3fn and scales (rows,) fp32.
    """
    rows, hidden = x2.shape
    codes = torch.empty(rows, hidden, dtype=CODE_DTYPE[fmt], device=x2.device)
    scales = torch.empty(rows, dtype=torch.float32, device=x2.device)
    if rows == 0:
        return codes, scales
    q = counters_per_row(hidden)
    single = hidden <= SINGLE_PASS_MAX
    bq = triton.next_power_of_2(q) if single else TWO_PASS_BLOCK_Q
    noise = sigma if sigma is not None else scales
    args = (x2, codes, scales, noise, float(clip), seed, offset, hidden, q, x2.stride(0))
    flags = dict(HAS_NOISE=sigma is not None, FP8=fmt == "fp8_e4m3", QMAX=QMAX[fmt], USE_RINT=not _INTERPRET,
                 SINGLE=single, BQ=bq, CLIP=clip > 0)  # fmt: skip
    if x2.is_cuda:
        _pack_tuned[(rows,)](*args, **flags)
    else:  # the interpreter: one configuration
        with launch_guard(x2):
            _pack_kernel[(rows,)](*args, **flags, num_warps=_warps(4 * bq))
    return codes, scales


def unpack_triton(codes: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """codes (rows, H) times scales (rows,) -> (rows, H) in ``dtype``."""
    rows, hidden = codes.shape
    out = torch.empty(rows, hidden, dtype=dtype, device=codes.device)
    if rows:
        bh = min(triton.next_power_of_2(hidden), 8192)
        with launch_guard(out):
            _unpack_kernel[(rows,)](codes, scales, out, hidden, BH=bh, num_warps=_warps(bh))
    return out


def noise_triton(rows: int, hidden: int, seed: int, offset: int, device: torch.device | str) -> torch.Tensor:
    """The noise field quant_pack adds at (seed, offset): (rows, hidden) fp32 N(0, 1)."""
    out = torch.empty(rows, hidden, dtype=torch.float32, device=device)
    if rows:
        q = counters_per_row(hidden)
        bq = min(triton.next_power_of_2(q), TWO_PASS_BLOCK_Q)
        with launch_guard(out):
            _noise_kernel[(rows,)](out, seed, offset, hidden, q, BQ=bq, num_warps=_warps(4 * bq))
    return out
