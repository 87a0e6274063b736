"""Fused LoRA linear (y = x W^T + s (x A^T) B^T + b) and in-place merge / exact unmerge.

Forward: one Triton program per (BLOCK_M x BLOCK_N) output tile reads its rows of x once per K
step and accumulates both x W^T and the rank-r x A^T from the same tile, then adds s (x A^T) B^T
(r is padded to what tl.dot needs; padding lanes are masked). The x A^T of the first column of
tiles is stored for backward. Backward (torch GEMMs, W frozen): dB = s dY^T (x A^T),
dA = s (dY B)^T x, dx = dY W + s (dY B) A only when x requires grad.
Merge: W += s B A in one pass over W tiles; the exact restore copies back the original W that
merge returns (a bf16 W += s B A then -= s B A is not bit-exact).
Dropout on the LoRA path is not fused: LoRALinear with dropout > 0 keeps its torch path.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .interpreter import launch_guard

# Interpreter tiles: 32x32 outputs, 32-wide K steps (small enough for CI sizes, the tl.dot minimum of
# 16 everywhere). GPU tiles: the usual Hopper GEMM tile 128x128x64, 8 warps, 3 stages (the 32^3 tiles
# ran 6x slower than cuBLAS on the H100, bench/results/lora-h100.json of 2026-11-22).
BLOCK_M, BLOCK_N, BLOCK_K = 32, 32, 32
GPU_TILE = {"BM": 128, "BN": 128, "BK": 64, "num_warps": 8, "num_stages": 3}
GPU_MERGE_TILE = {"BN": 64, "BK": 128, "num_warps": 4}


def _block_r(r: int) -> int:
    return max(16, triton.next_power_of_2(r))


@triton.jit
def _dot(a, b, HALF: tl.constexpr):
    if HALF:  # bf16/fp16 on a GPU: tensor cores with fp32 accumulation
        return tl.dot(a, b, out_dtype=tl.float32)
    return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee", out_dtype=tl.float32)


@triton.jit
def _lora_fwd_kernel(
    x_ptr, w_ptr, a_ptr, b_ptr, bias_ptr, y_ptr, xa_ptr, M, N, K, R, scale,
    sxm, sxk, swn, swk, sar, sak, sbn, sbr, sym, syn,
    HAS_BIAS: tl.constexpr, HALF: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    BR: tl.constexpr,
):  # fmt: skip
    pid_m, pid_n = tl.program_id(0), tl.program_id(1)
    rm = (pid_m * BM + tl.arange(0, BM)).to(tl.int64)  # int64: M * N can pass 2^31
    rn = (pid_n * BN + tl.arange(0, BN)).to(tl.int64)
    rr = tl.arange(0, BR)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    xa = tl.zeros((BM, BR), dtype=tl.float32)
    for k0 in range(0, K, BK):
        rk = k0 + tl.arange(0, BK)
        kmask = rk < K
        x = tl.load(x_ptr + rm[:, None] * sxm + rk[None, :] * sxk, mask=(rm[:, None] < M) & kmask[None, :], other=0.0)
        w = tl.load(w_ptr + rn[:, None] * swn + rk[None, :] * swk, mask=(rn[:, None] < N) & kmask[None, :], other=0.0)
        a = tl.load(a_ptr + rr[:, None] * sar + rk[None, :] * sak, mask=(rr[:, None] < R) & kmask[None, :], other=0.0)
        acc += _dot(x, tl.trans(w), HALF)
        xa += _dot(x, tl.trans(a.to(x.dtype)), HALF)  # fp32 adapters on a bf16 model: cast A once
    b = tl.load(b_ptr + rn[:, None] * sbn + rr[None, :] * sbr, mask=(rn[:, None] < N) & (rr[None, :] < R), other=0.0)
    acc += scale * tl.dot(xa, tl.trans(b.to(tl.float32)), input_precision="ieee", out_dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    tl.store(
        y_ptr + rm[:, None] * sym + rn[None, :] * syn,
        acc.to(y_ptr.dtype.element_ty),
        mask=(rm[:, None] < M) & (rn[None, :] < N),
    )
    if pid_n == 0:  # x A^T for the backward (M, R) fp32
        tl.store(xa_ptr + rm[:, None] * R + rr[None, :], xa, mask=(rm[:, None] < M) & (rr[None, :] < R))


@triton.jit
def _merge_kernel(w_ptr, a_ptr, b_ptr, N, K, R, scale, swn, swk, sar, sak, sbn, sbr,
                  BN: tl.constexpr, BK: tl.constexpr, BR: tl.constexpr):  # fmt: skip
    rn = (tl.program_id(0) * BN + tl.arange(0, BN)).to(tl.int64)
    rk = (tl.program_id(1) * BK + tl.arange(0, BK)).to(tl.int64)
    rr = tl.arange(0, BR)
    b = tl.load(b_ptr + rn[:, None] * sbn + rr[None, :] * sbr, mask=(rn[:, None] < N) & (rr[None, :] < R), other=0.0)
    a = tl.load(a_ptr + rr[:, None] * sar + rk[None, :] * sak, mask=(rr[:, None] < R) & (rk[None, :] < K), other=0.0)
    delta = tl.dot(b.to(tl.float32), a.to(tl.float32), input_precision="ieee", out_dtype=tl.float32)
    ptr = w_ptr + rn[:, None] * swn + rk[None, :] * swk
    mask = (rn[:, None] < N) & (rk[None, :] < K)
    w = tl.load(ptr, mask=mask, other=0.0).to(tl.float32)
    tl.store(ptr, (w + scale * delta).to(w_ptr.dtype.element_ty), mask=mask)


def _half(*ts: torch.Tensor) -> bool:
    return ts[0].is_cuda and all(t.dtype == ts[0].dtype for t in ts) and ts[0].dtype in (torch.float16, torch.bfloat16)


def lora_linear_forward(x2: torch.Tensor, W: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scale: float,
                        bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Kernel launch: x2 (M, K) -> (y (M, N) in x's dtype, x A^T (M, R) fp32)."""
    M, K = x2.shape
    N, R = W.shape[0], A.shape[0]
    y = torch.empty(M, N, dtype=x2.dtype, device=x2.device)
    xa = torch.empty(M, R, dtype=torch.float32, device=x2.device)
    tile = GPU_TILE if x2.is_cuda else {"BM": BLOCK_M, "BN": BLOCK_N, "BK": BLOCK_K}
    grid = (triton.cdiv(M, tile["BM"]), triton.cdiv(N, tile["BN"]))
    with launch_guard(x2):
        _lora_fwd_kernel[grid](
            x2, W, A, B, bias if bias is not None else W, y, xa, M, N, K, R, float(scale),
            x2.stride(0), x2.stride(1), W.stride(0), W.stride(1), A.stride(0), A.stride(1),
            B.stride(0), B.stride(1), y.stride(0), y.stride(1),
            HAS_BIAS=bias is not None, HALF=_half(x2, W), BR=_block_r(R), **tile,
        )  # fmt: skip
    return y, xa


def _compose_forward(x2, W, A, B, scale, bias):
    """cuBLAS composition (GPU default): xa_s = s x A^T (M, R); y = xa_s B^T (+ bias), then
    y += x W^T inside the big GEMM's epilogue (addmm_ with beta=1): one extra pass over y, none over x."""
    xa_s = (x2 @ A.t().to(x2.dtype)).mul_(scale)
    Bt = B.t().to(x2.dtype)
    y = torch.addmm(bias.to(x2.dtype), xa_s, Bt) if bias is not None else xa_s @ Bt
    return y.addmm_(x2, W.t()), xa_s


class LoRALinearFunction(torch.autograd.Function):
    """Autograd for the LoRA linear; W (and bias) are frozen: they get no gradient.

    Saved for backward (only what it reads): x when A trains, s x A^T when B trains, W/A/B when
    x needs a gradient. Backward: g = dY B (M, R); dA = s g^T x; dB = dY^T (s x A^T);
    dx = dY W + s g A (the small product first, then the big GEMM accumulates onto it).
    """

    @staticmethod
    def forward(ctx, x, W, A, B, scale, bias, impl):  # type: ignore[override]
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if impl == "triton":
            y, xa = lora_linear_forward(x2, W, A, B, scale, bias)
            xa_s = xa.mul_(scale)
        else:
            y, xa_s = _compose_forward(x2, W, A, B, scale, bias)
        need_x, need_a, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        # keep only what the backward reads: frozen layers above the trained block save no x or xa
        ctx.save_for_backward(x2 if need_a else None, W if need_x else None, A if (need_x or need_a) else None,
                              B if (need_x or need_a) else None, xa_s if need_b else None)  # fmt: skip
        ctx.scale, ctx.shape, ctx.dtypes = scale, shape, (x.dtype, A.dtype, B.dtype)
        return y.reshape(*shape[:-1], W.shape[0])

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        x2, W, A, B, xa_s = ctx.saved_tensors
        s = ctx.scale
        dy2 = dy.reshape(-1, dy.shape[-1]).contiguous()  # once: it is read up to three times below
        x_dtype, a_dtype, b_dtype = ctx.dtypes
        g = dy2 @ B.to(dy2.dtype) if B is not None else None  # (M, R); adapters may be fp32 on a bf16 model
        dA = (s * (g.t() @ x2.to(g.dtype))).to(a_dtype) if ctx.needs_input_grad[2] else None
        dB = (dy2.t() @ xa_s.to(dy2.dtype)).to(b_dtype) if ctx.needs_input_grad[3] else None
        dx = None
        if ctx.needs_input_grad[0]:
            dx = (g * s) @ A.to(dy2.dtype)
            dx = dx.addmm_(dy2, W.to(dy2.dtype)).to(x_dtype).reshape(ctx.shape)
        return dx, None, dA, dB, None, None, None


def lora_linear(x: torch.Tensor, W: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scale: float,
                bias: torch.Tensor | None = None, *, dropout: float = 0.0,
                impl: str = "auto") -> torch.Tensor:  # fmt: skip
    """y = x W^T + scale (x A^T) B^T (+ bias), x (..., d_in), W (d_out, d_in) frozen, A (r, d_in),
    B (d_out, r); output in x's dtype. Gradients flow to A, B and (if it requires grad) x.

    ``impl``: ``"triton"`` (the fused kernel: x read once per output tile, x A^T accumulated beside
    x W^T), ``"compose"`` (cuBLAS GEMMs, the LoRA term added in the big GEMM's epilogue) or
    ``"auto"``: triton on the CPU under TRITON_INTERPRET=1, compose everywhere else (on the H100,
    bench/bench_lora.py measured it faster than the fused kernel; see the README).
    """
    if dropout:
        raise ValueError("dropout on the LoRA path is not fused: use fedcore.lora.LoRALinear (torch path) for it")
    if impl not in ("auto", "triton", "compose"):
        raise ValueError(f"impl must be 'auto', 'triton' or 'compose', got {impl!r}")
    if x.shape[-1] != W.shape[1] or A.shape != (A.shape[0], W.shape[1]) or B.shape != (W.shape[0], A.shape[0]):
        raise ValueError(f"shapes do not chain: x {tuple(x.shape)}, W {tuple(W.shape)}, A {tuple(A.shape)}, "
                         f"B {tuple(B.shape)}")  # fmt: skip
    if W.requires_grad or (bias is not None and bias.requires_grad):
        raise ValueError("W and bias must be frozen (requires_grad=False): lora_linear gives them no gradient")
    if impl == "auto":
        impl = "triton" if (not x.is_cuda and os.environ.get("TRITON_INTERPRET") == "1") else "compose"
    if impl == "compose" and (x.dtype != W.dtype or torch.is_autocast_enabled(x.device.type)):
        # mixed dtypes or autocast: plain torch ops, which autocast knows how to cast
        out = torch.nn.functional.linear(x, W, bias)
        return out + scale * ((x @ A.t().to(x.dtype)) @ B.t().to(x.dtype)).to(out.dtype)
    if impl == "triton" and not triton_available_for(x):
        raise ValueError("impl='triton' on a CPU tensor needs TRITON_INTERPRET=1; use impl='compose'")
    return LoRALinearFunction.apply(x, W, A, B, scale, bias, impl)


def triton_available_for(x: torch.Tensor) -> bool:
    """True where the Triton path runs: on CUDA, or on CPU under TRITON_INTERPRET=1."""
    return x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


@torch.no_grad()
def lora_merge_(W: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scale: float) -> torch.Tensor:
    """W += scale * B @ A in place (one pass over W, fp32 math). Returns a copy of the original W:
    pass it to ``lora_unmerge_`` for a bit-exact restore."""
    if W.dim() != 2 or A.shape[1] != W.shape[1] or B.shape != (W.shape[0], A.shape[0]):
        raise ValueError(f"need W (d_out, d_in), A (r, d_in), B (d_out, r); got {tuple(W.shape)}, "
                         f"{tuple(A.shape)}, {tuple(B.shape)} (a Conv1D stores W transposed)")  # fmt: skip
    original = W.clone()
    if not triton_available_for(W):  # a CPU tensor without the interpreter: the same fp32 math in torch
        W.copy_((W.float() + scale * (B.float() @ A.float())).to(W.dtype))
        return original
    N, K = W.shape
    tile = GPU_MERGE_TILE if W.is_cuda else {"BN": BLOCK_N, "BK": BLOCK_K}
    grid = (triton.cdiv(N, tile["BN"]), triton.cdiv(K, tile["BK"]))
    with launch_guard(W):
        _merge_kernel[grid](W, A, B, N, K, A.shape[0], float(scale), W.stride(0), W.stride(1),
                            A.stride(0), A.stride(1), B.stride(0), B.stride(1),
                            BR=_block_r(A.shape[0]), **tile)  # fmt: skip
    return original


@torch.no_grad()
def lora_unmerge_(W: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Restore W exactly from the copy ``lora_merge_`` returned (in place; returns W)."""
    if original.shape != W.shape or original.dtype != W.dtype:
        raise ValueError("original must be the tensor lora_merge_ returned for this W")
    return W.copy_(original)
