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


def test_kernels_launched_from_several_threads_at_once_stay_correct():
    """The interpreter patches triton.language globals during a launch; fedcore's CPU launches
    hold one lock (kernels/interpreter.py), so threads (in-process FL clients) can share it."""
    import threading

    from fedcore.kernels.fisher import persample_sqgrad, persample_sqgrad_reference

    gen = torch.Generator().manual_seed(0)
    cases = [(torch.randn(2, 5, 7, generator=gen), torch.randn(2, 5, 3, generator=gen)) for _ in range(6)]
    results: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(3):
                results[i] = persample_sqgrad(*cases[i], impl="triton")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[0]
    for i, (x, g) in enumerate(cases):
        torch.testing.assert_close(results[i], persample_sqgrad_reference(x, g), rtol=1e-5, atol=1e-6)
