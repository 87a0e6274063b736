"""Per-sample diagonal-Fisher statistics of a Linear layer without per-sample gradients.

For y = x W^T with x (B, T, d_in) and the output gradient g = dL/dy (B, T, d_out), sample n's
weight gradient is G_n = sum_t g_nt x_nt^T (d_out, d_in). We need
  sqgrad  = sum_n G_n * G_n          (d_out, d_in)  the diagonal empirical Fisher (unnormalised)
  sqnorm  = ||G_n||_F^2              (B,)           the per-sample difficulty score (its trace)
  rowsum  = sum_n sum_j (G_n)_ij^2   (d_out,)       neuron importance
Tools that materialise G_n need B * d_out * d_in memory; here:
- ``persample_sqgrad``: a Triton kernel, one (BLOCK_O x BLOCK_I) tile of the output per program,
  looping over samples and building G_n's tile in registers from T-chunks (the FLOPs of one
  weight-gradient GEMM, O(d_out * d_in) memory), optionally fused with the momentum update.
  Without a GPU (and outside the interpreter) a per-sample torch loop with the same memory bound.
- ``persample_sqnorm`` / ``persample_rowsum``: the ghost (Gram) forms
  sum_{t,t'} (x_t . x_t')(g_t . g_t') and g_{:,i}^T (X X^T) g_{:,i} when 2 T^2 < d_in d_out,
  per-sample G_n in chunks otherwise.
Padding: ``mask`` (B, T) zeroes a token's contribution. Statistics are fp32 (fp64 for fp64 input).
Scaling: these are statistics of the gradients you pass; see fedcore.fisher for loss conventions.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .interpreter import launch_guard

# Tile sizes: 32x32 output tiles and 32-token chunks keep the interpreter fast at CI sizes and
# satisfy tl.dot's >= 16 rule; GPU tuning awaits a GPU run (bench/bench_fisher.py).
BLOCK_O, BLOCK_I, BLOCK_T = 32, 32, 32


@triton.jit
def _sqgrad_kernel(
    x_ptr, g_ptr, m_ptr, out_ptr, B, T, D_IN, D_OUT,
    sxb, sxt, sxi, sgb, sgt, sgo, smb, smt,
    gamma,
    HAS_MASK: tl.constexpr, MOMENTUM: tl.constexpr, ACC: tl.constexpr, HALF_DOT: tl.constexpr,
    BO: tl.constexpr, BI: tl.constexpr, BT: tl.constexpr,
):  # fmt: skip
    pid_o, pid_i = tl.program_id(0), tl.program_id(1)
    ro = (pid_o * BO + tl.arange(0, BO)).to(tl.int64)  # int64 offsets: B * T * d can pass 2^31
    ri = (pid_i * BI + tl.arange(0, BI)).to(tl.int64)
    total = tl.zeros((BO, BI), dtype=ACC)
    for n0 in range(0, B):
        n = tl.cast(n0, tl.int64)
        tile = tl.zeros((BO, BI), dtype=ACC)
        for t0 in range(0, T, BT):
            rt = (t0 + tl.arange(0, BT)).to(tl.int64)
            tmask = rt < T
            g = tl.load(
                g_ptr + n * sgb + rt[:, None] * sgt + ro[None, :] * sgo,
                mask=tmask[:, None] & (ro[None, :] < D_OUT),
                other=0.0,
            )  # (BT, BO)
            x = tl.load(
                x_ptr + n * sxb + rt[:, None] * sxt + ri[None, :] * sxi,
                mask=tmask[:, None] & (ri[None, :] < D_IN),
                other=0.0,
            )  # (BT, BI)
            if HAS_MASK:
                w = tl.load(m_ptr + n * smb + rt * smt, mask=tmask, other=0.0)
                g = g * w[:, None].to(g.dtype)  # 0/1: exact in any dtype
            if HALF_DOT:  # bf16/fp16 on a GPU: tensor cores, fp32 accumulation
                tile += tl.dot(tl.trans(g), x, out_dtype=ACC)
            else:  # fp32/fp64 (and the CPU interpreter): exact-precision products
                tile += tl.dot(tl.trans(g.to(ACC)), x.to(ACC), input_precision="ieee", out_dtype=ACC)
        total += tile * tile
    optr = out_ptr + ro[:, None] * D_IN + ri[None, :]
    omask = (ro[:, None] < D_OUT) & (ri[None, :] < D_IN)
    if MOMENTUM:
        old = tl.load(optr, mask=omask, other=0.0)
        total = gamma * old + (1.0 - gamma) * total
    tl.store(optr, total, mask=omask)


def _stat_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check(x: torch.Tensor, g: torch.Tensor, mask: torch.Tensor | None) -> None:
    if x.dim() != 3 or g.dim() != 3 or x.shape[:2] != g.shape[:2]:
        raise ValueError(f"x must be (B, T, d_in) and g (B, T, d_out) with the same B, T; got "
                         f"{tuple(x.shape)} and {tuple(g.shape)}")  # fmt: skip
    if mask is not None and mask.shape != x.shape[:2]:
        raise ValueError(f"mask must be (B, T) = {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
    if x.device != g.device:
        raise ValueError("x and g must be on the same device")


def _use_triton(x: torch.Tensor) -> bool:
    return x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


def persample_sqgrad(
    x: torch.Tensor, g: torch.Tensor, mask: torch.Tensor | None = None, *,
    out: torch.Tensor | None = None, momentum: float | None = None, impl: str = "auto",
) -> torch.Tensor:  # fmt: skip
    """sum_n (g_n^T x_n)^2 elementwise: (d_out, d_in), fp32 (fp64 for fp64 inputs).

    With ``out`` and ``momentum`` = gamma, updates ``out`` in place to
    gamma * out + (1 - gamma) * sqgrad (one pass, fused in the kernel) and returns it.
    ``impl``: "triton", "torch" or "auto" (Triton on CUDA or under TRITON_INTERPRET=1).
    """
    _check(x, g, mask)
    batch, steps, d_in = x.shape
    d_out = g.shape[2]
    dtype = _stat_dtype(x)
    if momentum is not None and not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    if momentum is not None and out is None:
        raise ValueError("momentum needs out= (the running statistic to update)")
    if out is not None and (out.shape != (d_out, d_in) or out.dtype != dtype or not out.is_contiguous()):
        raise ValueError(f"out must be a contiguous ({d_out}, {d_in}) {dtype} tensor")
    use_triton = impl == "triton" or (impl == "auto" and _use_triton(x))
    if impl not in ("auto", "triton", "torch"):
        raise ValueError(f"impl must be 'auto', 'triton' or 'torch', got {impl!r}")
    if not use_triton:
        new = persample_sqgrad_reference(x, g, mask)
        if out is None:
            return new
        if momentum is None:
            return out.copy_(new)
        return out.mul_(momentum).add_(new, alpha=1.0 - momentum)
    target = out if out is not None else torch.empty(d_out, d_in, dtype=dtype, device=x.device)
    m = mask.to(x.device) if mask is not None else x  # any tensor: unused without HAS_MASK
    grid = (triton.cdiv(d_out, BLOCK_O), triton.cdiv(d_in, BLOCK_I))
    with launch_guard(x):
        _sqgrad_kernel[grid](
            x, g, m, target, batch, steps, d_in, d_out,
            x.stride(0), x.stride(1), x.stride(2), g.stride(0), g.stride(1), g.stride(2),
            m.stride(0) if mask is not None else 0, m.stride(1) if mask is not None else 0,
            float(momentum or 0.0),
            HAS_MASK=mask is not None, MOMENTUM=momentum is not None,
            ACC=tl.float64 if dtype == torch.float64 else tl.float32,
            HALF_DOT=x.is_cuda and x.dtype == g.dtype and x.dtype in (torch.float16, torch.bfloat16),
            BO=BLOCK_O, BI=BLOCK_I, BT=BLOCK_T,
        )  # fmt: skip
    return target


def persample_sqgrad_reference(x: torch.Tensor, g: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Plain torch: one sample's gradient at a time (O(d_out * d_in) memory)."""
    _check(x, g, mask)
    out = torch.zeros(g.shape[2], x.shape[2], dtype=_stat_dtype(x), device=x.device)
    for xn, gn in _samples(x, g, mask):
        out += (gn.t() @ xn).square()
    return out


def _ghost_cheaper(steps: int, d_in: int, d_out: int) -> bool:
    return 2 * steps * steps < d_in * d_out


def persample_sqnorm(x: torch.Tensor, g: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """||g_n^T x_n||_F^2 per sample: (B,), fp32 (fp64 for fp64 inputs). Ghost form when cheaper."""
    _check(x, g, mask)
    ghost = _ghost_cheaper(x.shape[1], x.shape[2], g.shape[2])
    out = []
    for xn, gn in _samples(x, g, mask):  # one sample at a time: no fp32 copy of all of g
        out.append(((xn @ xn.t()) * (gn @ gn.t())).sum() if ghost else (gn.t() @ xn).square().sum())
    return torch.stack(out)


def persample_rowsum(x: torch.Tensor, g: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """sum_n sum_j (g_n^T x_n)_ij^2: (d_out,), fp32 (fp64 for fp64 inputs). Ghost form when cheaper."""
    _check(x, g, mask)
    ghost = _ghost_cheaper(x.shape[1], x.shape[2], g.shape[2])
    out = torch.zeros(g.shape[2], dtype=_stat_dtype(x), device=x.device)
    for xn, gn in _samples(x, g, mask):
        out += (((xn @ xn.t()) @ gn) * gn).sum(0) if ghost else (gn.t() @ xn).square().sum(1)
    return out


def _samples(x: torch.Tensor, g: torch.Tensor, mask: torch.Tensor | None):
    """(x_n, g_n) in the statistics dtype, masked, one sample at a time."""
    dtype = _stat_dtype(x)
    for n in range(x.shape[0]):
        xn, gn = x[n].to(dtype), g[n].to(dtype)
        if mask is not None:
            gn = gn * mask[n, :, None].to(dtype)
        yield xn, gn


def lora_inputs(x: torch.Tensor, g: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scale: float
                ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """The (input, output-gradient) pairs whose Linear statistics are those of the LoRA factors.

    For y = x W^T + s (x A^T) B^T: dA_n = sum_t (s B^T g_t) x_t^T, so A sees input x and gradient
    s g B (B, T, r); dB_n = sum_t (s g_t) (A x_t)^T, so B sees input x A^T (B, T, r) and gradient
    s g. Feed each pair to the functions above.
    """
    return {"lora_A": (x, scale * (g @ B.to(g.dtype))), "lora_B": (x @ A.t().to(x.dtype), scale * g)}
