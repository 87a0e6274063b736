"""Noise + per-token int8 packing and its inverse: Triton vs CUDA C++ vs torch.compile vs eager torch.

GPU: h (8, 2048, 4096) in fp16 and bf16 (throughput, as a share of the byte limit: read x, write
codes + scales; the limit is a device-to-device copy measured in the same run) and (1, 512, 4096)
(latency: one call, synchronised). Medians of triton.testing.do_bench (its default repeats).
CPU: fedcore's CPU path vs the eager torch a user would write, median of 7 perf_counter runs.

    python bench/bench_quant_pack.py [--out PATH]
    pytest bench/bench_quant_pack.py --benchmark-only
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import goal, median_ms, print_table, write_results  # noqa: E402
from fedcore.kernels import dequant, quant_pack  # noqa: E402
from fedcore.kernels.quant_pack import pack_triton, unpack_triton  # noqa: E402

CUDA = torch.cuda.is_available()
SIGMA = 0.01


def eager_pack(x: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """What a user writes by hand: noise, per-token absmax, scale, round, clamp, int8."""
    y = x.float() + sigma * torch.randn(x.shape, device=x.device, dtype=torch.float32)
    absmax = y.abs().amax(dim=-1, keepdim=True)
    scale = absmax / 127.0
    codes = torch.round(y / scale).clamp(-127, 127).to(torch.int8)
    return codes, scale.squeeze(-1)


def eager_unpack(codes: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (codes.float() * scales[..., None]).to(dtype)


def _gpu_ms(fn) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, return_mode="median"))


def copy_limit_tbps() -> float:
    """Device-to-device copy bandwidth (bytes read + written per second / 1e12) on a 1 GiB buffer."""
    src = torch.empty(2**28, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    ms = _gpu_ms(lambda: dst.copy_(src))
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e12


def gpu(rows: list[dict], goals: list[dict]) -> dict:
    from fedcore.kernels.quant_pack_cuda import cuda_extension, pack_cuda, unpack_cuda

    tbps = copy_limit_tbps()
    ext = cuda_extension()
    compiled_pack = torch.compile(eager_pack)
    compiled_unpack = torch.compile(eager_unpack)
    for shape, latency in (((8, 2048, 4096), False), ((1, 512, 4096), True)):
        for dtype in (torch.float16, torch.bfloat16):
            case = f"{shape} {str(dtype).replace('torch.', '')}"
            x = torch.randn(shape, device="cuda", dtype=dtype)
            x2 = x.reshape(-1, shape[-1])
            sigma = torch.tensor([SIGMA], device="cuda")
            n = x.numel()
            pack_bytes = n * x.element_size() + n + x2.shape[0] * 4
            unpack_bytes = n + x2.shape[0] * 4 + n * x.element_size()
            codes, scales = pack_triton(x2, None, 1, 0, "int8")
            packs = {
                "eager": lambda x=x: eager_pack(x, SIGMA),
                "torch_compile": lambda x=x: compiled_pack(x, SIGMA),
                "triton": lambda x2=x2, s=sigma: pack_triton(x2, s, 1, 0, "int8"),
                "triton_no_noise": lambda x2=x2: pack_triton(x2, None, 1, 0, "int8"),
                "quant_pack_api": lambda x=x: quant_pack(x, noise_std=SIGMA),
            }
            unpacks = {
                "eager": lambda c=codes, s=scales, d=dtype: eager_unpack(c, s, d),
                "torch_compile": lambda c=codes, s=scales, d=dtype: compiled_unpack(c, s, d),
                "triton": lambda c=codes, s=scales, d=dtype: unpack_triton(c, s, d),
                "dequant_api": lambda c=codes, s=scales, d=dtype: dequant(c, s, d),
            }
            if ext is not None:
                packs["cuda"] = lambda x2=x2, s=sigma: pack_cuda(x2, s, 1, 0, "int8")
                packs["cuda_no_noise"] = lambda x2=x2: pack_cuda(x2, None, 1, 0, "int8")
                packs["cuda_occ4"] = lambda x2=x2, s=sigma: pack_cuda(x2, s, 1, 0, "int8", 1)
                packs["cuda_occ4_no_noise"] = lambda x2=x2: pack_cuda(x2, None, 1, 0, "int8", 1)
                unpacks["cuda"] = lambda c=codes, s=scales, d=dtype: unpack_cuda(c, s, d)
            for op, fns, nbytes in (("pack", packs, pack_bytes), ("dequant", unpacks, unpack_bytes)):
                limit_ms = nbytes / (tbps * 1e12) * 1e3
                times = {}
                for impl, fn in fns.items():
                    ms = median_ms(fn, warmup=5, repeats=50) if latency else _gpu_ms(fn)
                    times[impl] = ms
                    rows.append(
                        {
                            "case": f"{op} {case}",
                            "impl": impl,
                            "ms": round(ms, 4),
                            "share_of_limit": round(limit_ms / ms, 4),
                            "timing": "one synchronised call (latency)" if latency else "do_bench median",
                        }
                    )
                fastest = min(("triton", "cuda", "cuda_occ4"), key=lambda k: times.get(k, float("inf")))
                if not latency:
                    goals.append(
                        goal(f"{op} {case} ({fastest}), share of byte limit", limit_ms / times[fastest], ">= 0.80")
                    )
                for other in ("eager", "torch_compile"):
                    rows.append(
                        {
                            "case": f"{op} {case}",
                            "impl": f"speedup of {fastest} vs {other}",
                            "ms": 0.0,
                            "ratio": round(times[other] / times[fastest], 3),
                        }  # fmt: skip
                    )
                for variant in ("cuda", "cuda_occ4"):
                    if variant in times:
                        ratio = round(times[variant] / times["triton"], 3)
                        rows.append(
                            {"case": f"{op} {case}", "impl": f"{variant} / triton time", "ms": 0.0, "ratio": ratio}
                        )
    from fedcore.kernels import choices

    return {"copy_TBps": round(tbps, 3), "dispatcher": choices()}


def cpu(rows: list[dict], goals: list[dict]) -> dict:
    shape = (4, 512, 4096)
    x = torch.randn(shape)
    case = f"{shape} float32"
    t = {
        "eager": median_ms(lambda: eager_pack(x, SIGMA), warmup=2, repeats=7),
        "fedcore_cpu_path": median_ms(lambda: quant_pack(x, noise_std=SIGMA, impl="torch"), warmup=2, repeats=7),
        "fedcore_cpu_no_noise": median_ms(lambda: quant_pack(x, impl="torch"), warmup=2, repeats=7),
    }
    for impl, ms in t.items():
        rows.append({"case": f"pack {case}", "impl": impl, "ms": round(ms, 3)})
    goals.append(goal("CPU pack: eager torch time / fedcore CPU path", t["eager"] / t["fedcore_cpu_path"], ">= 1.0"))
    for name in ("pack (8, 2048, 4096) fp16/bf16, share of byte limit", "dequant share of byte limit"):
        goals.append(
            {"name": name, "measured": None, "target": ">= 0.80", "met": None, "pending": "no GPU in this run"}
        )
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows: list[dict] = []
    goals: list[dict] = []
    limits = gpu(rows, goals) if CUDA else cpu(rows, goals)
    print(f"wrote {write_results('quant_pack', rows, goals, out=args.out, limits=limits)}")
    print_table(rows, goals)


def test_quant_pack_cpu(benchmark):
    x = torch.randn(64, 4096)
    benchmark(lambda: quant_pack(x, noise_std=SIGMA, impl="torch" if not CUDA else "auto"))


if __name__ == "__main__":
    main()
