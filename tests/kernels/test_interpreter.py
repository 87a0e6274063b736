"""CI runs Triton kernels on the CPU through the interpreter: check that plumbing is in place.

``make test`` sets TRITON_INTERPRET=1 before Python starts (the variable is read when kernels are
decorated). The kernel is the smallest one that uses what fedcore's kernels rely on: masked
loads/stores, fp32 math and the in-kernel Philox stream.
"""

from __future__ import annotations

import os

import pytest
import torch

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
    reason="needs TRITON_INTERPRET=1 (set by make test) or a GPU",
)


@triton.jit
def _axpy_noise(x_ptr, y_ptr, out_ptr, n, alpha, seed, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    noise = tl.randn(seed, offs)
    tl.store(out_ptr + offs, alpha * x + y + 0.0 * noise, mask=mask)


@pytest.mark.parametrize("n", [1, 7, 1000, 1025])
def test_interpreted_kernel_matches_torch(n):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(n)
    x, y = torch.randn(n, generator=gen).to(device), torch.randn(n, generator=gen).to(device)
    out = torch.empty_like(x)
    _axpy_noise[(triton.cdiv(n, 256),)](x, y, out, n, 2.5, 1234, BLOCK=256)
    torch.testing.assert_close(out, 2.5 * x + y)


def test_ci_sets_the_interpreter():
    if os.environ.get("CI") and not torch.cuda.is_available():
        assert os.environ.get("TRITON_INTERPRET") == "1"
