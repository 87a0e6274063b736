"""Split-step overhead and pipelining over real processes: one client process and the server
(this process) on one machine, CurveZMQ on loopback, int8 codecs in all four directions.

Cases, each timed per optimizer step (the client's own step time: batch in, optimizer stepped;
the median over the steps after ``--warmup``):
- centralized: the unsplit model with the same LoRA on the same batches, in one process;
- split on loopback, unpipelined and with ``--micro-batches`` micro-batches (GPipe);
- split on a link shaped to ``--mbps`` MB/s per direction, unpipelined and pipelined.
Every case runs once per repeat (``--repeats``, 3); figures and ratios are medians over repeats,
the ratios taken within each repeat.

Goals (issue #7, GPU only): the unpipelined loopback split step costs <= 1.3x the centralized step;
on the shaped link pipelining hides >= 70% of the unpipelined step's communication time, taken as
(T_split - T_centralized), everything the split adds to the step:
hidden = (T_unpipelined - T_pipelined) / (T_unpipelined - T_centralized).

    python bench/bench_split_link.py [--shape tiny|llama-3.2-1b] [--device cpu|cuda] [--mbps 1100]
        [--micro-batches 4] [--steps 10] [--repeats 3] [--out PATH]

The CPU default shapes the link to 5 MB/s, which makes the tiny model's wire time about its
compute time (the GPU case's ratio at 1,100 MB/s is what the issue asks to measure). On the CPU
every process computes on one thread: with torch's default threads the client and the server
processes, computing at once when pipelined, oversubscribe a small machine's cores (on 2 cores
4 micro-batches then took 4.4x the unpipelined step instead of 0.9x).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_split_modes import SHAPES  # noqa: E402
from common import goal, print_table, write_results  # noqa: E402

from fedcore.algorithms.builders import base_model  # noqa: E402
from fedcore.algorithms.split.config import SplitRunConfig as RunConfig  # noqa: E402
from fedcore.algorithms.split.config import config_from_dict  # noqa: E402
from fedcore.algorithms.split.setup import build_client_data, endless_batches  # noqa: E402
from fedcore.data import CharTokenizer  # noqa: E402
from fedcore.lora import inject_lora, lora_parameters  # noqa: E402
from fedcore.runtime import run_processes  # noqa: E402


def make_config(args: argparse.Namespace, *, micro_batches: int, mbps: float) -> RunConfig:
    return config_from_dict(
        {
            "model": SHAPES[args.shape],
            "split": {"mode": "sequential", "micro_batches": micro_batches},
            "noise": {"std": 0.0},
            "codecs": {"h_A": "int8", "h_B": "int8", "dh_B": "int8", "dh_A": "int8"},
            "train": {
                "clients": 1,
                "rounds": 1,
                "local_steps": args.warmup + args.steps,
                "batch_size": args.batch_size,
                "device": args.device,
            },
            "data": {"train_per_client": 8 * args.batch_size, "eval_per_client": 2},
            # a 1 KiB burst: every 64 KiB chunk arrives when the link would have carried it
            "transport": {"mbps": mbps, "chunk_kib": 64, "burst_kib": 1, "lease_s": 120.0},
        }
    )


def split_step_seconds(config: RunConfig, warmup: int) -> tuple[float, float, int]:
    """(median step seconds, their stdev, wire bytes per step) of one run over processes."""
    result = run_processes(config).result
    secs = [s.seconds for s in result.steps[warmup:]]
    per_step = sum(result.wire_bytes.get(t, 0) for t in ("h_A", "h_B", "dh_B", "dh_A")) // len(result.steps)
    return statistics.median(secs), statistics.stdev(secs) if len(secs) > 1 else 0.0, per_step


def centralized_step_seconds(config: RunConfig, warmup: int) -> tuple[float, float]:
    """(median, stdev) step seconds of the unsplit model with the same LoRA on the client's batches."""
    tok = CharTokenizer()
    device = config.train.device
    model = base_model(config.model, tok.vocab_size).to(device)
    inject_lora(model.model.layers, targets=config.lora.targets, r=config.lora.r, alpha=config.lora.alpha)
    opt = torch.optim.AdamW(lora_parameters(model).values(), lr=config.train.lr)
    stream = endless_batches(build_client_data(config, tok)[0], config, 0, tok.pad_id)
    secs = []
    for _ in range(config.train.local_steps):
        batch = next(stream)
        t0 = time.perf_counter()
        batch = {k: v.to(device) for k, v in batch.items()}
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        float(loss.detach())  # the split step ends on its loss too
        secs.append(time.perf_counter() - t0)
    secs = secs[warmup:]
    return statistics.median(secs), statistics.stdev(secs) if len(secs) > 1 else 0.0


def _hidden(unpipelined: float, pipelined: float, centralized: float) -> float:
    """The share of the split's added step time (its communication) that pipelining hides."""
    added = unpipelined - centralized
    return (unpipelined - pipelined) / added if added > 0 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--mbps", type=float, default=None, help="shaped link speed (default: 1100 GPU, 5 CPU)")
    parser.add_argument("--micro-batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="rounds over every case (medians reported)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    on_gpu = args.device.startswith("cuda")
    mbps = args.mbps if args.mbps is not None else (1100.0 if on_gpu else 5.0)
    if not on_gpu:
        os.environ["OMP_NUM_THREADS"] = "1"  # the client process is spawned with this environment
        torch.set_num_threads(1)
    m = args.micro_batches
    case = f"{args.shape}, batch {args.batch_size}, int8 codecs, CURVE"
    shaped = f"{mbps:g} MB/s"
    cases = [("loopback", 0.0, 1), ("loopback", 0.0, m), (shaped, mbps, 1), (shaped, mbps, m)]
    base = make_config(args, micro_batches=1, mbps=0.0)
    runs: dict[str, list[float]] = {}  # impl -> per-repeat median step seconds
    nbytes: dict[str, int] = {}
    per_repeat: dict[str, list[float]] = {"overhead": [], "hidden": [], "hidden_loopback": []}
    for r in range(args.repeats):  # every case once per repeat: the VM's drift hits all of them alike
        central = centralized_step_seconds(base, args.warmup)[0]
        runs.setdefault("centralized", []).append(central)
        times = {}
        for link, speed, micro in cases:
            median, _, nbytes_step = split_step_seconds(make_config(args, micro_batches=micro, mbps=speed), args.warmup)
            label = f"split {link}, " + ("unpipelined" if micro == 1 else f"{micro} micro-batches")
            runs.setdefault(label, []).append(median)
            nbytes[label] = nbytes_step
            times[(link, micro)] = median
        per_repeat["overhead"].append(times[("loopback", 1)] / central)
        per_repeat["hidden"].append(_hidden(times[(shaped, 1)], times[(shaped, m)], central))
        per_repeat["hidden_loopback"].append(_hidden(times[("loopback", 1)], times[("loopback", m)], central))
        print(f"repeat {r}: " + ", ".join(f"{k} {1e3 * v[-1]:.1f} ms" for k, v in runs.items()), flush=True)
    rows = []
    for impl, secs in runs.items():
        row = {"case": case, "impl": impl, "ms": round(1e3 * statistics.median(secs), 2),
               "std_ms": round(1e3 * statistics.stdev(secs), 2) if len(secs) > 1 else 0.0,
               "repeats_ms": [round(1e3 * x, 2) for x in secs]}  # fmt: skip
        if impl in nbytes:
            speed = mbps if shaped in impl else 0.0
            row["wire_bytes_per_step"] = nbytes[impl]
            row["wire_ms_at_link"] = round(1e3 * nbytes[impl] / (speed * 1e6), 2) if speed else None
        rows.append(row)
    med = {k: statistics.median(v) for k, v in per_repeat.items()}
    goals = [
        goal("split step / centralized step, loopback, int8 codecs", round(med["overhead"], 3), "<= 1.3"),
        goal(f"share of communication hidden by {m} micro-batches at {shaped}", round(med["hidden"], 3), ">= 0.7"),
        {"name": "share of communication hidden on loopback", "measured": round(med["hidden_loopback"], 3),
         "target": "report", "met": None},
    ]  # fmt: skip
    for g, key in zip(goals, per_repeat, strict=True):
        g["per_repeat"] = [round(x, 3) for x in per_repeat[key]]
    if not on_gpu or args.shape != "llama-3.2-1b":
        for g in goals[:2]:  # the goals are about the GPU with the 1B shape; this run is an analogue
            g["met"], g["pending"] = None, "no GPU in this run (the goals are for the Llama-3.2-1B shape on a GPU)"
    print_table(rows, goals)
    print(f"wrote {write_results('split_link', rows, goals, out=args.out)}")


if __name__ == "__main__":
    main()
