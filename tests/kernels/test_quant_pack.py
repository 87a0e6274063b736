"""quant_pack / dequant_unpack against the plain reference: codes bit for bit, scales to 1 ulp, the
documented zero / NaN / inf rows, the round-trip error, and the Philox noise stream's statistics.

On CPU the Triton kernels run under TRITON_INTERPRET=1 (set by make test); on a GPU the Triton and
CUDA C++ paths are both checked.
"""

from __future__ import annotations

import os

import pytest
import torch
from fedcore.kernels import dequant, dequant_unpack, gaussian_noise, quant_pack
from fedcore.kernels.quant_pack_ref import pack_reference, philox_normals, unpack_reference

CUDA = torch.cuda.is_available()
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cuda" if CUDA else "cpu"
SHAPES = [(1, 1, 7), (3, 5, 4095), (2, 1, 8193), (1, 2, 16389)]  # the last takes the two-pass path
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _impls() -> list[str]:
    impls = ["torch"] if not CUDA else []
    if CUDA or INTERPRET:
        impls.append("triton")
    if CUDA:
        from fedcore.kernels.quant_pack_cuda import cuda_extension

        if cuda_extension() is not None:
            impls.append("cuda")
    return impls


IMPLS = _impls()


def _x(shape, dtype, seed, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen) * scale).to(dtype).to(DEVICE)


def _assert_scales_within_ulp(got: torch.Tensor, want: torch.Tensor) -> None:
    got, want = got.cpu(), want.cpu()
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    ok = ~torch.isnan(want)
    ulp = torch.nextafter(want[ok], torch.full_like(want[ok], float("inf"))) - want[ok]
    assert ((got[ok] - want[ok]).abs() <= ulp).all()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_codes_bit_exact_without_noise(impl, shape, dtype):
    x = _x(shape, dtype, seed=sum(shape))
    packed = quant_pack(x, impl=impl)
    codes, scales = pack_reference(x)
    assert packed.codes.dtype == torch.int8 and packed.codes.shape == x.shape
    assert packed.scales.dtype == torch.float32 and packed.scales.shape == x.shape[:-1]
    assert torch.equal(packed.codes.cpu(), codes)
    _assert_scales_within_ulp(packed.scales, scales)
    back = dequant_unpack(packed, impl="torch" if not x.is_cuda else impl)
    assert back.dtype == dtype and torch.equal(back.cpu(), unpack_reference(codes, packed.scales.cpu(), dtype))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_error_on_gaussian_rows(impl, dtype):
    x = _x((8, 4096), dtype, seed=7, scale=0.02)  # mean |h_A| ~ 0.02, as FedSEA-LLaMA reports
    back = dequant_unpack(quant_pack(x, impl=impl)).float()
    rel = ((back - x.float()).norm() / x.float().norm()).item()
    # absmax ~ 3.7 sigma on 4096 Gaussians: step / sqrt(12) / sigma ~ 0.85%
    assert 0.005 < rel <= 0.01, rel


@pytest.mark.parametrize("impl", IMPLS)
def test_zero_nan_and_inf_rows_as_documented(impl):
    x = _x((6, 37), torch.float32, seed=11)
    x[1] = 0.0
    x[2, 5] = float("nan")
    x[3, 0] = float("inf")
    x[4, 36] = -float("inf")
    packed = quant_pack(x, impl=impl)
    codes, scales = packed.codes.cpu(), packed.scales.cpu()
    assert scales[1] == 0 and (codes[1] == 0).all()
    for row in (2, 3, 4):
        assert torch.isnan(scales[row]) and (codes[row] == 0).all()
    back = dequant_unpack(packed).cpu()
    assert (back[1] == 0).all()
    assert torch.isnan(back[2:5]).all(), "a non-finite value must never come back finite"
    ref_codes, ref_scales = pack_reference(x)
    assert torch.equal(codes, ref_codes)
    _assert_scales_within_ulp(scales, ref_scales)


@pytest.mark.parametrize("impl", [i for i in IMPLS if i != "torch"])  # the CPU path has its own stream
@pytest.mark.parametrize("shape", [(1, 1, 7), (3, 2, 259), (1, 1, 16389)])
def test_noisy_pack_equals_reference_with_the_same_noise_field(impl, shape):
    x = _x(shape, torch.float32, seed=3)
    seed, offset, sigma = 2**40 + 12345, 977, 0.25
    packed = quant_pack(x, noise_std=sigma, seed=seed, offset=offset, impl=impl)
    rows = x.numel() // shape[-1]
    noise = philox_normals(rows, shape[-1], seed, offset)
    codes, scales = pack_reference(x, noise=noise, sigma=sigma)
    # the noise agrees to ~1e-6 (fast log/sin/cos on a GPU): a code may flip at a rounding tie
    diff = (packed.codes.cpu().int() - codes.int()).abs()
    assert diff.max() <= 1 and diff.float().mean() < 1e-3
    torch.testing.assert_close(packed.scales.cpu(), scales, rtol=1e-5, atol=0)


def test_noise_field_matches_numpy_philox():
    for shape, seed, offset in [((1, 7), 0, 0), ((3, 4095), 2**63 + 5, 2**40), ((2, 8193), 99, 2**32 - 3)]:
        got = gaussian_noise(shape, seed=seed, offset=offset, device=DEVICE).cpu()
        want = philox_normals(shape[0], shape[1], seed, offset)
        torch.testing.assert_close(got, want, rtol=0, atol=2e-5)


def _field(shape, seed, offset):
    """The kernels' noise field: from the Triton kernel on a GPU; on CPU from the numpy Philox, which
    test_noise_field_matches_numpy_philox ties to the interpreted kernel (1M samples there take ~1 min)."""
    if CUDA:
        return gaussian_noise(shape, seed=seed, offset=offset, device="cuda").double()
    return philox_normals(shape[0], shape[1], seed, offset).double()


def test_noise_statistics_over_a_million_samples():
    shape = (64, 16384)  # 1,048,576 samples per call
    a = _field(shape, 2024, 0)
    b = _field(shape, 2024, shape[0] * 4096)  # the next stretch of the same stream
    assert a.numel() >= 1_000_000
    assert abs(a.mean().item()) < 0.01  # within 0.01 sigma of 0
    assert abs(a.std().item() - 1.0) < 0.02  # within 2% of sigma
    corr = ((a - a.mean()) * (b - b.mean())).mean() / (a.std() * b.std())
    assert abs(corr.item()) < 0.01
    assert torch.equal(a, _field(shape, 2024, 0))
    c = _field(shape, 2025, 0)  # another seed, same offset: independent too
    assert abs((((a - a.mean()) * (c - c.mean())).mean() / (a.std() * c.std())).item()) < 0.01


@pytest.mark.parametrize("impl", IMPLS)
def test_noise_std_absolute_and_relative_through_the_pack(impl):
    x = _x((32, 512), torch.float32, seed=5, scale=0.02)
    for relative, std in ((False, 0.01), (True, 0.5)):
        sigma = std * x.abs().mean().item() if relative else std
        packed = quant_pack(x, noise_std=std, relative=relative, seed=1, impl=impl)
        assert packed.sigma is not None and abs(packed.sigma.item() - sigma) <= 1e-5 * sigma
        err = dequant_unpack(packed).float() - x
        clean = dequant_unpack(quant_pack(x, impl=impl)).float() - x
        measured = (err.var() - clean.var()).clamp_min(0).sqrt().item()  # noise std, quantization removed
        assert abs(measured - sigma) < 0.1 * sigma, (measured, sigma)


@pytest.mark.parametrize("impl", IMPLS)
def test_seeds_fresh_by_default_and_reproducible_when_fixed(impl):
    x = _x((4, 96), torch.float32, seed=8)
    p1, p2 = quant_pack(x, noise_std=0.5, impl=impl), quant_pack(x, noise_std=0.5, impl=impl)
    assert p1.seed != p2.seed and not torch.equal(p1.codes, p2.codes)
    again = quant_pack(x, noise_std=0.5, seed=p1.seed, offset=p1.offset, impl=impl)
    assert torch.equal(again.codes, p1.codes) and torch.equal(again.scales, p1.scales)


@pytest.mark.skipif(not (CUDA or INTERPRET), reason="the Philox stream runs in the Triton kernel")
def test_offsets_chain_one_stream_across_calls():
    x = _x((2, 3, 50), torch.float32, seed=4)
    whole = quant_pack(x, noise_std=0.3, seed=77, offset=10, impl="triton")
    first = quant_pack(x[:1], noise_std=0.3, seed=77, offset=10, impl="triton")
    second = quant_pack(x[1:], noise_std=0.3, seed=77, offset=first.next_offset, impl="triton")
    assert first.next_offset == 10 + 3 * 13 and whole.next_offset == 10 + 6 * 13
    assert torch.equal(torch.cat([first.codes, second.codes]), whole.codes)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fp8_cpu_path_matches_reference(dtype):
    x = _x((3, 5, 257), dtype, seed=21).cpu()
    packed = quant_pack(x, fmt="fp8_e4m3", impl="torch")
    codes, scales = pack_reference(x, fmt="fp8_e4m3")
    assert packed.codes.dtype == torch.float8_e4m3fn
    assert torch.equal(packed.codes.view(torch.uint8), codes.view(torch.uint8))
    _assert_scales_within_ulp(packed.scales, scales)
    back = dequant_unpack(packed, impl="torch").float()
    assert ((back - x.float()).norm() / x.float().norm()).item() < 0.04  # 3 mantissa bits


@pytest.mark.skipif(not CUDA or torch.cuda.get_device_capability() < (8, 9), reason="fp8 kernels need sm >= 89")
@pytest.mark.parametrize("impl", [i for i in IMPLS if i != "torch"])
@pytest.mark.parametrize("shape", SHAPES)
def test_fp8_gpu_matches_reference(impl, shape):
    x = _x(shape, torch.bfloat16, seed=sum(shape))
    packed = quant_pack(x, fmt="fp8_e4m3", impl=impl)
    codes, scales = pack_reference(x, fmt="fp8_e4m3")
    assert torch.equal(packed.codes.cpu().view(torch.uint8), codes.view(torch.uint8))
    _assert_scales_within_ulp(packed.scales, scales)
    back = dequant(packed.codes, packed.scales, torch.float32, impl=impl).cpu()
    assert torch.equal(back, unpack_reference(codes, packed.scales.cpu(), torch.float32))


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_dispatcher_picks_a_measured_implementation_and_says_so():
    from fedcore.kernels import choices

    x = _x((64, 1024), torch.bfloat16, seed=1)
    packed = quant_pack(x)
    picked = choices()
    assert packed.impl in ("triton", "cuda") and picked
    assert any(
        entry["impl"] == packed.impl and any(k.startswith(packed.impl) for k in entry["ms"])
        for entry in picked.values()
    )


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_every_cuda_variant_matches_the_reference():
    from fedcore.kernels.quant_pack_cuda import cuda_extension, pack_cuda, pack_variants

    if cuda_extension() is None:
        pytest.skip("the CUDA C++ path did not build here")
    for shape in SHAPES[:3]:
        x = _x(shape, torch.bfloat16, seed=2).reshape(-1, shape[-1])
        codes, _ = pack_reference(x)
        for v in range(pack_variants()):
            got, _ = pack_cuda(x, None, 1, 0, "int8", v)
            assert torch.equal(got.cpu(), codes), (shape, v)


def test_bad_arguments_are_refused_clearly():
    x = torch.randn(2, 8)
    with pytest.raises(TypeError, match="fp16, bf16 or fp32"):
        quant_pack(x.to(torch.float64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        quant_pack([1.0, 2.0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="H >= 1"):
        quant_pack(torch.randn(3, 0))
    with pytest.raises(ValueError, match="fmt"):
        quant_pack(x, fmt="int4")
    with pytest.raises(ValueError, match="noise_std"):
        quant_pack(x, noise_std=-1.0)
    with pytest.raises(ValueError, match="noise_std"):
        quant_pack(x, noise_std=float("nan"))
    with pytest.raises(ValueError, match="seed"):
        quant_pack(x, seed=-1)
    with pytest.raises(ValueError, match="impl"):
        quant_pack(x, impl="numba")
    with pytest.raises(ValueError, match="CUDA tensor"):
        quant_pack(x, impl="cuda")
    with pytest.raises(TypeError, match="Packed"):
        dequant_unpack((x, x))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scales"):
        dequant(torch.zeros(2, 8, dtype=torch.int8), torch.zeros(3), torch.float32)


def test_strided_and_non_contiguous_inputs():
    base = torch.randn(6, 40, generator=torch.Generator().manual_seed(9))
    for x in (base[::2], base.t().contiguous().t(), base[:, 3:29]):
        packed = quant_pack(x, impl="torch")
        codes, _ = pack_reference(x)
        assert torch.equal(packed.codes, codes)


@pytest.mark.parametrize("impl", IMPLS)
def test_tiny_rows_pack_as_zeros_and_a_nan_row_spares_the_others_relative_noise(impl):
    x = _x((4, 33), torch.float32, seed=12)
    x[1] = x[1] * 1e-36  # absmax below TINY: 127 / absmax would overflow fp32
    x[2, 3] = float("nan")
    packed = quant_pack(x, impl=impl)
    assert packed.scales[1].item() == 0 and (packed.codes[1] == 0).all()
    ref_codes, _ = pack_reference(x)
    assert torch.equal(packed.codes.cpu(), ref_codes)
    noisy = quant_pack(x, noise_std=0.1, relative=True, seed=3, impl=impl)
    assert torch.isfinite(noisy.sigma).all()  # mean |x| over finite elements only
    scales = noisy.scales.cpu()
    assert torch.isnan(scales[2]) and torch.isfinite(scales[[0, 1, 3]]).all()


@pytest.mark.parametrize("fmt", ["int8", "fp8_e4m3"])
def test_cpu_path_chunking_does_not_change_the_codes(fmt):
    """The CPU path's chunks (3 rows, or the default byte-sized ones) give the reference's codes."""
    from fedcore.kernels.quant_pack_ref import pack_cpu

    x = _x((37, 130), torch.float32, seed=11, scale=3.0)
    x[5, 7] = float("nan")  # a non-finite row inside a chunk
    want_codes, want_scales = pack_reference(x, fmt=fmt)
    for rows in (3, 0):
        codes, scales = pack_cpu(x, None, 0, 0, fmt, chunk_rows=rows)
        assert torch.equal(codes.view(torch.uint8), want_codes.view(torch.uint8))
        torch.testing.assert_close(scales, want_scales, rtol=0, atol=0, equal_nan=True)


CLIP_IMPLS = [i for i in IMPLS if i != "cuda"]  # the CUDA C++ kernels do not clip (auto takes Triton)


@pytest.mark.parametrize("impl", CLIP_IMPLS)
@pytest.mark.parametrize("shape", [(3, 5, 259), (1, 2, 16389)])  # single- and two-pass rows
@pytest.mark.parametrize("dtype", DTYPES)
def test_clipped_pack_equals_reference_and_bounds_every_row(impl, shape, dtype):
    """Per-token L2 clipping fused before the noise: rows above the bound come out at norm C, rows
    below it untouched; the codes equal the reference's up to one step where the norm's summation
    order moves the clip factor by an ulp."""
    x = _x(shape, dtype, seed=11, scale=0.2)
    norms = x.float().reshape(-1, shape[-1]).norm(dim=-1)
    clip = float(norms.median())  # about half the rows are clipped
    packed = quant_pack(x, clip=clip, impl=impl)
    codes, scales = pack_reference(x, clip=clip)
    assert (packed.codes.cpu().int() - codes.int()).abs().max() <= 1
    torch.testing.assert_close(packed.scales.cpu(), scales, rtol=2e-6, atol=0)
    back = dequant_unpack(packed, torch.float32).reshape(-1, shape[-1]).cpu()
    step = packed.scales.reshape(-1, 1).cpu()  # one code of each row
    bound = clip + step.squeeze(1) * shape[-1] ** 0.5 / 2  # int8 rounding moves a row by <= half a step per element
    assert (back.norm(dim=-1) <= bound).all()
    kept = norms.cpu() < clip * 0.99
    assert ((back[kept] - x.float().reshape(-1, shape[-1]).cpu()[kept]).abs() <= step[kept] / 2 * 1.001).all()


@pytest.mark.parametrize("impl", [i for i in CLIP_IMPLS if i != "torch"])
def test_clip_then_noise_equals_reference_with_the_same_noise_field(impl):
    x = _x((4, 3, 131), torch.float32, seed=5)
    seed, offset, clip, z = 99, 7, 1.5, 0.8
    packed = quant_pack(x, noise_std=z * clip, clip=clip, seed=seed, offset=offset, impl=impl)
    noise = philox_normals(12, 131, seed, offset)
    codes, scales = pack_reference(x, noise=noise, sigma=z * clip, clip=clip)
    assert (packed.codes.cpu().int() - codes.int()).abs().max() <= 1
    torch.testing.assert_close(packed.scales.cpu(), scales, rtol=1e-5, atol=0)


@pytest.mark.parametrize("impl", CLIP_IMPLS)
def test_clip_keeps_a_non_finite_row_non_finite(impl):
    x = _x((3, 64), torch.float32, seed=2)
    x[1, 5] = float("inf")
    x[2, 0] = float("nan")
    packed = quant_pack(x, clip=0.5, impl=impl)
    assert torch.isnan(packed.scales[1:].cpu()).all() and torch.isfinite(packed.scales[0].cpu())


def test_clip_arguments_are_refused_clearly():
    x = torch.randn(2, 8)
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="clip must be finite and >= 0"):
            quant_pack(x, clip=bad)
    with pytest.raises(ValueError, match="relative noise is not the Gaussian mechanism"):
        quant_pack(x, clip=1.0, noise_std=0.1, relative=True)
    with pytest.raises(ValueError, match="impl='cuda' does not clip"):
        quant_pack(x, clip=1.0, impl="cuda")
