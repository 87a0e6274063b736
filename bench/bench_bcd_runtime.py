"""ParaBlock vs FedBCD round time over shaped links (real processes, CurveZMQ, loopback).

Links of 50, 100 and 150 MB/s per direction (the ParaBlock paper's) carry one block's update up
and the aggregate down each round. On the CPU the model is a tiny Llama and every link is scaled
by (tiny block bytes / Llama-3.2-1B block bytes), so the ratio of communication to computation
is the full-size one; ``--shape llama-3.2-1b --device cuda`` runs the full-size block (hidden
2048, MLP 8192, 32 heads / 8 KV heads) at the links' real speed. K (local steps) is chosen so
that computation is ``--compute-over-comm`` (1.2) times the communication at ``--match-mbps``
(50 MB/s): then every speed's communication can hide behind computation, as in the paper's
setting where it was about a third of FedBCD's time (``--local-steps`` overrides).

Per speed and method, from the clients' timelines: the median round time over rounds 1..R-2 (the
slowest client's time from the start of a round to the start of the next; round 0 has nothing to
overlap), the slowest client's computation and communication per round. Goals (issue #9):
ParaBlock round <= max(compute, comm) + 5%; ParaBlock hides >= 90% of the communication FedBCD
exposes: 1 - (T_para - C_para) / (T_bcd - C_bcd). Also reported: the saving against the most any
overlap can save, (T_bcd - T_para) / min(C_bcd, T_bcd - C_bcd), which stays meaningful when
communication outlasts computation (then no schedule hides all of it). Writes bench/results/bcd_runtime-<device>.json
and a Gantt chart per method at the middle speed.

    python bench/bench_bcd_runtime.py [--rounds 6] [--clients 2] [--shape tiny|llama-3.2-1b]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, device_slug, goal, write_results  # noqa: E402

from fedcore.algorithms.bcd import BCDConfig, plot_timeline  # noqa: E402
from fedcore.algorithms.bcd.runner import build_trainer, client_data  # noqa: E402
from fedcore.config import DataConfig, ModelConfig, TransportConfig  # noqa: E402
from fedcore.runtime import run_processes  # noqa: E402

PAPER_MBPS = (50.0, 100.0, 150.0)
# one Llama-3.2-1B decoder layer: q, o 2048^2; k, v 2048 x 512; gate, up, down 2048 x 8192; 2 norms
LLAMA_1B_BLOCK_PARAMS = 2 * 2048 * 2048 + 2 * 2048 * 512 + 3 * 2048 * 8192 + 2 * 2048
SHAPES = {
    "tiny": ModelConfig(hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2),
    "llama-3.2-1b": ModelConfig(hidden_size=2048, intermediate_size=8192, num_layers=4, num_heads=32, num_kv_heads=8),
}


def base_config(args: argparse.Namespace, method: str, mbps: float, steps: int) -> BCDConfig:
    return BCDConfig(
        method=method,
        model=SHAPES[args.shape],
        data=DataConfig(train_per_client=64, eval_per_client=8, max_len=48),
        clients=args.clients,
        rounds=args.rounds,
        local_steps=steps,
        batch_size=args.batch_size,
        schedule="sequential",  # a different block each round, the same sequence for both methods
        device=args.device,
        round_timeout_s=600.0,
        # 64 KiB chunks and burst: a block leaves at the link's pace, not as one early frame
        transport=TransportConfig(kind="zmq", curve=True, mbps=mbps, lease_s=60.0, chunk_kib=64, burst_kib=64),
    )


def step_seconds(config: BCDConfig) -> tuple[float, int]:
    """Median seconds of one local step of one block (this process, same threads as a client),
    and the block's bytes."""
    torch.set_num_threads(config.threads_per_client)
    trainer = build_trainer(config, 0, client_data(config)[0])
    trainer.steps = 3
    trainer.train_delta(0)  # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        trainer.train_delta(1)
        if config.device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) / 3)
    block_bytes = sum(trainer.params[n].numel() * trainer.params[n].element_size() for n in trainer.blocks[1])
    return statistics.median(times), block_bytes


def per_round(timeline: list[dict], kind: str, rounds: range) -> list[float]:
    """Per round: the slowest client's seconds of ``kind``."""
    out = []
    for t in rounds:
        spans = [
            r["end"] - r["start"] for r in timeline if r["kind"] == kind and r["round"] == t and r["who"] != "server"
        ]
        if spans:
            out.append(max(spans))
    return out


def round_periods(timeline: list[dict], rounds: range) -> list[float]:
    """Per round t: the slowest client's time from the start of its round t to the start of its
    round t + 1 (its first interval of each round), i.e. what a round costs in steady state."""
    starts: dict[tuple[str, int], float] = {}
    for r in timeline:
        if r["who"] != "server":
            key = (r["who"], r["round"])
            starts[key] = min(starts.get(key, r["start"]), r["start"])
    clients = {who for who, _ in starts}
    out = []
    for t in rounds:
        gaps = [starts[(c, t + 1)] - starts[(c, t)] for c in clients if (c, t) in starts and (c, t + 1) in starts]
        if gaps:
            out.append(max(gaps))
    return out


def _compact(timeline: list[dict]) -> list[list]:
    """[who, kind, round, start, end] with times in seconds from the run's first interval."""
    t0 = min((r["start"] for r in timeline), default=0.0)
    return [[r["who"], r["kind"], r["round"], round(r["start"] - t0, 3), round(r["end"] - t0, 3)] for r in timeline]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--local-steps", type=int, default=0, help="0: from --compute-over-comm and --match-mbps")
    parser.add_argument("--compute-over-comm", type=float, default=1.2)
    parser.add_argument("--match-mbps", type=float, default=50.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    probe = base_config(args, "fedbcd", 100.0, 1)
    step_s, block_bytes = step_seconds(probe)
    scale = 1.0 if args.shape == "llama-3.2-1b" else block_bytes / (4 * LLAMA_1B_BLOCK_PARAMS)
    comm = 2 * block_bytes / (args.match_mbps * 1e6 * scale)  # one block up and one down
    steps = args.local_steps or max(1, round(args.compute_over_comm * comm / step_s))
    print(f"block {block_bytes / 1e6:.2f} MB, link scale {scale:.5f}, step {step_s * 1e3:.1f} ms, K = {steps}")
    rows, goals, timelines = [], [], {}
    rounds = range(1, args.rounds - 1)  # steady state: round 0 has nothing to overlap, the last has no next
    for paper_mbps in PAPER_MBPS:
        mbps = paper_mbps * scale
        found = {}
        for method in ("fedbcd", "parablock"):
            result = run_processes(base_config(args, method, mbps, steps)).result
            t_round = statistics.median(round_periods(result.timeline, rounds))
            compute = statistics.median(per_round(result.timeline, "compute", rounds))
            comm = statistics.median(per_round(result.timeline, "comm", rounds))
            found[method] = (t_round, compute, comm)
            if paper_mbps == 100.0:
                timelines[method] = result.timeline
            rows.append(
                {
                    "case": f"{args.shape} block {block_bytes / 1e6:.2f} MB, {paper_mbps:.0f} MB/s"
                    + (f" (scaled: {mbps:.3f} MB/s)" if scale != 1.0 else "")
                    + f", {args.clients} clients, K={steps}",
                    "impl": method,
                    "ms": round(1e3 * t_round, 1),
                    "compute_ms": round(1e3 * compute, 1),
                    "comm_ms": round(1e3 * comm, 1),
                    "link_ms_per_direction": round(1e3 * block_bytes / (mbps * 1e6), 1),
                    "round_ms_each": [round(1e3 * r.seconds, 1) for r in result.records],
                    "timeline": _compact(result.timeline),
                }
            )
            print(f"{paper_mbps:5.0f} MB/s {method:<10} round {t_round:6.2f} s  compute {compute:6.2f} s  "
                  f"comm {comm:6.2f} s", flush=True)  # fmt: skip
        (tb, cb, _), (tp, cp, mp) = found["fedbcd"], found["parablock"]
        goals.append(goal(f"{paper_mbps:.0f} MB/s: ParaBlock round / max(compute, comm)", tp / max(cp, mp), "<= 1.05"))
        exposed = tb - cb
        speed = f"{paper_mbps:.0f} MB/s"
        goals.append(
            goal(f"{speed}: share of FedBCD's exposed comm ParaBlock hides", 1 - (tp - cp) / exposed, ">= 0.9")
        )
        for name, value in (
            ("FedBCD / ParaBlock round time", tb / tp),
            ("saving / largest possible saving min(C, T_bcd - C)", (tb - tp) / min(cb, exposed)),
        ):
            goals.append({"name": f"{speed}: {name}", "measured": round(value, 4), "target": "report", "met": None})
    limits = {"block_bytes": block_bytes, "link_scale": scale, "local_steps": steps, "step_ms": round(1e3 * step_s, 2)}
    path = write_results("bcd_runtime", rows, goals, out=args.out, limits=limits)
    print(f"wrote {path}")
    for method, tl in timelines.items():
        png = (args.out.parent if args.out else RESULTS) / f"bcd_runtime-{method}-{device_slug()}.png"
        plot_timeline(tl, png, title=f"{method} at 100 MB/s (scaled): compute (lower) vs comm (upper lane)")
        print(f"wrote {png}")
    for g in goals:
        print(f"goal: {g['name']}: measured {g['measured']} target {g['target']} met {g['met']}")


if __name__ == "__main__":
    main()
