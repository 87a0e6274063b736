"""Fused LoRA linear against peft's LoRA layer (fp32, 1e-5), merge/unmerge exactness."""

from __future__ import annotations

import os

import pytest
import torch
from fedcore.kernels import lora_linear, lora_merge_, lora_unmerge_
from torch import nn

peft = pytest.importorskip("peft")
peft_lora = pytest.importorskip("peft.tuners.lora")
pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
    reason="the Triton path needs TRITON_INTERPRET=1 (make test sets it) or a GPU",
)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _peft_layer(W, bias, A, B, alpha):
    base = nn.Linear(W.shape[1], W.shape[0], bias=bias is not None)
    with torch.no_grad():
        base.weight.copy_(W)
        if bias is not None:
            base.bias.copy_(bias)
    wrapped = peft.get_peft_model(
        nn.Sequential(base), peft.LoraConfig(target_modules=["0"], r=A.shape[0], lora_alpha=alpha, lora_dropout=0.0)
    )
    layer = wrapped.base_model.model[0]
    assert isinstance(layer, peft_lora.Linear)
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(A)
        layer.lora_B["default"].weight.copy_(B)
    return layer.to(DEVICE)


@pytest.mark.parametrize("r", [1, 4, 8, 16, 64])
@pytest.mark.parametrize("shape", [(1, 1, 7, 5), (2, 5, 37, 23), (3, 11, 64, 33)])  # (B, T, d_in, d_out)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("impl", ["triton", "compose"])
def test_forward_and_gradients_equal_peft(shape, r, bias, impl):
    batch, steps, d_in, d_out = shape
    gen = torch.Generator().manual_seed(r * 100 + d_in)
    W = torch.randn(d_out, d_in, generator=gen) / d_in**0.5
    A = torch.randn(r, d_in, generator=gen) / d_in**0.5
    B = torch.randn(d_out, r, generator=gen) / r**0.5
    b = torch.randn(d_out, generator=gen) if bias else None
    x = torch.randn(batch, steps, d_in, generator=gen)
    alpha = 2.0 * r
    layer = _peft_layer(W, b, A, B, alpha)
    xp = x.to(DEVICE).requires_grad_(True)
    probe = torch.randn(batch, steps, d_out, generator=gen).to(DEVICE)  # dL/dy: a fixed random direction
    ref = layer(xp)
    (ref * probe).sum().backward()

    Ad, Bd = A.to(DEVICE).requires_grad_(True), B.to(DEVICE).requires_grad_(True)
    xo = x.to(DEVICE).requires_grad_(True)
    out = lora_linear(xo, W.to(DEVICE), Ad, Bd, alpha / r, b.to(DEVICE) if b is not None else None, impl=impl)
    (out * probe).sum().backward()
    pairs = [(out, ref), (xo.grad, xp.grad), (Ad.grad, layer.lora_A["default"].weight.grad),
             (Bd.grad, layer.lora_B["default"].weight.grad)]  # fmt: skip
    for ours, theirs in pairs:  # 1e-5 relative to each tensor's scale (fp32 sums in another order)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5 * max(1.0, float(theirs.detach().abs().max())))


def test_no_input_gradient_when_x_is_frozen_and_errors():
    gen = torch.Generator().manual_seed(0)
    W, A, B = torch.randn(6, 9, generator=gen), torch.randn(2, 9, generator=gen), torch.randn(6, 2, generator=gen)
    A.requires_grad_(True)
    x = torch.randn(3, 9, generator=gen)  # the first block's input: no dx needed
    lora_linear(x, W, A, B, 1.0).sum().backward()
    assert A.grad is not None and x.grad is None
    with pytest.raises(ValueError, match="dropout"):
        lora_linear(x, W, A, B, 1.0, dropout=0.1)
    with pytest.raises(ValueError, match="chain"):
        lora_linear(x, W, A[:, :5], B, 1.0)
    with pytest.raises(ValueError, match="frozen"):
        lora_linear(x, W.requires_grad_(True), A, B, 1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape,r", [((33, 47), 1), ((64, 64), 16), ((19, 70), 8)])
def test_merge_then_unmerge_restores_w_exactly(shape, r, dtype):
    gen = torch.Generator().manual_seed(shape[0])
    W = torch.randn(shape, generator=gen).to(DEVICE, dtype)
    A = torch.randn(r, shape[1], generator=gen).to(DEVICE, dtype)
    B = torch.randn(shape[0], r, generator=gen).to(DEVICE, dtype)
    before = W.clone()
    original = lora_merge_(W, A, B, 0.5)
    expected = (before.float() + 0.5 * B.float() @ A.float()).to(dtype)
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(W.float(), expected.float(), rtol=tol, atol=tol * 10)
    assert not torch.equal(W, before)
    lora_unmerge_(W, original)
    assert torch.equal(W, before)


def test_fp32_adapters_on_half_activations_backward():
    # peft keeps adapters in fp32 on a bf16 model: backward must cast, and return each grad in its dtype
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 16, generator=gen).to(DEVICE, torch.bfloat16).requires_grad_(True)
    W = torch.randn(8, 16, generator=gen).to(DEVICE, torch.bfloat16)
    A = torch.randn(2, 16, generator=gen).to(DEVICE).requires_grad_(True)
    B = torch.randn(8, 2, generator=gen).to(DEVICE).requires_grad_(True)
    out = lora_linear(x, W, A, B, 1.0)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert A.grad.dtype == torch.float32 and B.grad.dtype == torch.float32 and x.grad.dtype == torch.bfloat16
    ref_A = (torch.ones(4, 8, device=DEVICE) @ B.detach()).t() @ x.detach().float()  # dA = (dY B)^T x
    torch.testing.assert_close(A.grad, ref_A, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("trainable", ["A", "B", "x"])
def test_partial_gradients_save_only_what_they_need(trainable):
    gen = torch.Generator().manual_seed(9)
    x, W = torch.randn(5, 12, generator=gen).to(DEVICE), torch.randn(7, 12, generator=gen).to(DEVICE)
    A, B = torch.randn(3, 12, generator=gen).to(DEVICE), torch.randn(7, 3, generator=gen).to(DEVICE)
    leaf = {"A": A, "B": B, "x": x}[trainable].requires_grad_(True)
    lora_linear(x, W, A, B, 0.5).sum().backward()
    ref = {"A": (torch.ones(5, 7, device=DEVICE) @ B).t() @ x * 0.5,
           "B": torch.ones(7, 5, device=DEVICE) @ (x @ A.detach().t()) * 0.5 if trainable == "B" else None,
           "x": torch.ones(5, 7, device=DEVICE) @ (W + 0.5 * B @ A)}[trainable]  # fmt: skip
    torch.testing.assert_close(leaf.grad, ref.detach(), rtol=1e-5, atol=1e-5)
