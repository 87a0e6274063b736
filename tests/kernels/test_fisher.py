"""Fisher kernels against torch.func.vmap(grad(...)) per-sample gradients (float64 on CPU)."""

from __future__ import annotations

import os

import pytest
import torch
from fedcore.kernels import lora_inputs, persample_rowsum, persample_sqgrad, persample_sqnorm
from torch.func import grad, vmap

IMPLS = ["torch"] + (["triton"] if os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available() else [])
GPU_TRITON = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"


def _sqgrad(x, g, mask=None, *, impl, **kw):
    """persample_sqgrad on the device the impl runs on (a GPU for triton when one is here), result on CPU."""
    if impl == "triton" and GPU_TRITON:
        x, g = x.cuda(), g.cuda()
        mask = mask.cuda() if mask is not None else None
        if "out" in kw:
            out = kw.pop("out")
            cuda_out = out.cuda().clone()
            res = persample_sqgrad(x, g, mask, impl=impl, out=cuda_out, **kw)
            assert res is cuda_out  # the GPU kernel updates its out= in place
            out.copy_(res.cpu())
            return out
        return persample_sqgrad(x, g, mask, impl=impl, **kw).cpu()
    return persample_sqgrad(x, g, mask, impl=impl, **kw)


SHAPES = [(1, 1, 7, 3), (1, 9, 16, 16), (3, 37, 33, 17), (2, 5, 40, 70), (4, 64, 12, 5)]  # (B, T, d_in, d_out)


def _problem(shape, dtype, seed, *, padded: bool):
    batch, steps, d_in, d_out = shape
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, steps, d_in, generator=gen, dtype=dtype)
    target = torch.randn(batch, steps, d_out, generator=gen, dtype=dtype)
    mask = torch.ones(batch, steps, dtype=dtype)
    if padded:  # variable lengths: sample n keeps its first len_n tokens
        for n in range(batch):
            mask[n, int(torch.randint(1, steps + 1, (1,), generator=gen)) :] = 0
    return x, target, mask


def _per_sample_loss(y, target, mask, reduction):
    per_token = ((y - target) ** 2).sum(-1) * mask  # (T,)
    return per_token.sum() if reduction == "sum" else per_token.sum() / mask.sum().clamp(min=1)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("shape", SHAPES)
def test_full_weight_stats_match_vmap(shape, reduction, padded, impl):
    dtype = torch.float64
    x, target, mask = _problem(shape, dtype, seed=sum(shape), padded=padded)
    W = torch.randn(shape[3], shape[2], dtype=dtype, generator=torch.Generator().manual_seed(1))

    def loss_n(w, xn, tn, mn):
        return _per_sample_loss(xn @ w.t(), tn, mn, reduction)

    per_sample = vmap(grad(loss_n), in_dims=(None, 0, 0, 0))(W, x, target, mask)  # (B, d_out, d_in)
    # the same per-sample gradients from one ordinary backward of L = sum_n L_n
    y = (x @ W.t()).requires_grad_(True)
    total = sum(_per_sample_loss(y[n], target[n], mask[n], reduction) for n in range(shape[0]))
    (g,) = torch.autograd.grad(total, y)
    torch.testing.assert_close(_sqgrad(x, g, mask, impl=impl), per_sample.square().sum(0))
    torch.testing.assert_close(persample_sqnorm(x, g, mask), per_sample.square().sum((1, 2)))
    torch.testing.assert_close(persample_rowsum(x, g, mask), per_sample.square().sum((0, 2)))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("r", [1, 4, 8])
@pytest.mark.parametrize("shape", [(1, 6, 10, 7), (3, 21, 33, 17)])
def test_lora_factor_stats_match_vmap(shape, r, impl):
    dtype = torch.float64
    x, target, mask = _problem(shape, dtype, seed=r, padded=True)
    gen = torch.Generator().manual_seed(r + 7)
    W = torch.randn(shape[3], shape[2], dtype=dtype, generator=gen)
    A = torch.randn(r, shape[2], dtype=dtype, generator=gen)
    B = torch.randn(shape[3], r, dtype=dtype, generator=gen)
    scale = 2.0 / r

    def loss_n(a, b, xn, tn, mn):
        return _per_sample_loss(xn @ W.t() + scale * (xn @ a.t()) @ b.t(), tn, mn, "sum")

    gA, gB = vmap(grad(loss_n, argnums=(0, 1)), in_dims=(None, None, 0, 0, 0))(A, B, x, target, mask)
    y = (x @ W.t() + scale * (x @ A.t()) @ B.t()).requires_grad_(True)
    (g,) = torch.autograd.grad(sum(_per_sample_loss(y[n], target[n], mask[n], "sum") for n in range(shape[0])), y)
    pairs = lora_inputs(x, g, A, B, scale)
    for name, ref in (("lora_A", gA), ("lora_B", gB)):
        inp, gr = pairs[name]
        torch.testing.assert_close(_sqgrad(inp, gr, mask, impl=impl), ref.square().sum(0))
        torch.testing.assert_close(persample_sqnorm(inp, gr, mask), ref.square().sum((1, 2)))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_momentum_update(impl, dtype):
    x, target, mask = _problem((2, 11, 19, 23), dtype, seed=3, padded=True)
    g = torch.randn(2, 11, 23, dtype=dtype, generator=torch.Generator().manual_seed(4))
    running = torch.rand(23, 19, dtype=dtype, generator=torch.Generator().manual_seed(5))
    expected = 0.8 * running + 0.2 * persample_sqgrad(x, g, mask, impl="torch")
    out = _sqgrad(x, g, mask, out=running, momentum=0.8, impl=impl)
    assert out is running
    torch.testing.assert_close(running, expected)


def test_float32_statistics_and_errors():
    x, _, mask = _problem((2, 7, 9, 4), torch.float32, seed=0, padded=False)
    g = torch.randn(2, 7, 4)
    assert persample_sqgrad(x, g).dtype == torch.float32 and persample_sqgrad(x, g).shape == (4, 9)
    with pytest.raises(ValueError, match="same B, T"):
        persample_sqgrad(x, g[:, :3])
    with pytest.raises(ValueError, match="mask"):
        persample_sqnorm(x, g, mask[:, :2])
    with pytest.raises(ValueError, match="out="):
        persample_sqgrad(x, g, momentum=0.5)
    with pytest.raises(ValueError, match="impl"):
        persample_sqgrad(x, g, impl="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("shape", SHAPES)
def test_triton_on_gpu_matches_vmap_float32(shape, dtype, tol):
    x, target, mask = _problem(shape, torch.float32, seed=7, padded=True)
    W = torch.randn(shape[3], shape[2], generator=torch.Generator().manual_seed(2))

    def loss_n(w, xn, tn, mn):
        return _per_sample_loss(xn @ w.t(), tn, mn, "sum")

    per_sample = vmap(grad(loss_n), in_dims=(None, 0, 0, 0))(W, x, target, mask)
    y = (x @ W.t()).requires_grad_(True)
    (g,) = torch.autograd.grad(sum(_per_sample_loss(y[n], target[n], mask[n], "sum") for n in range(shape[0])), y)
    got = persample_sqgrad(x.cuda().to(dtype), g.cuda().to(dtype), mask.cuda(), impl="triton")
    ref = per_sample.square().sum(0)
    torch.testing.assert_close(got.cpu(), ref, rtol=tol, atol=tol * float(ref.abs().max()))
