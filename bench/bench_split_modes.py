"""Split training modes side by side (the analogue of FedSEA-LLaMA's Table 7): sequential vs
client-batch vs server-hierarchical with 2 / 4 / 8 clients vs centralized training on the same
samples, mean +- std of wall time over repeats.

Each split run trains every client ``STEPS`` steps (one round, batch 16) in one process (threads,
InProcessHub: the roles and messages of the multi-process job without socket costs); the time is
the training wall time (model building and the evaluations left out, one warm-up run first).
Centralized trains the unsplit model with the same LoRA on the same clients x STEPS batches.
``--shape tiny`` is the main job's default model (the CPU table); ``--shape llama-3.2-1b
--device cuda`` is a random-initialised Llama-3.2-1B-shaped model (16 layers, hidden 2048,
vocab 128256) on the GPU.

    python bench/bench_split_modes.py [--repeats 5] [--shape tiny|llama-3.2-1b] [--device cpu|cuda]
        [--clients 2 4 8] [--out PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

from fedcore.algorithms.builders import base_model  # noqa: E402
from fedcore.algorithms.split.config import config_from_dict  # noqa: E402
from fedcore.algorithms.split.setup import build_client_data, endless_batches  # noqa: E402
from fedcore.data import CharTokenizer  # noqa: E402
from fedcore.lora import inject_lora, lora_parameters  # noqa: E402
from fedcore.runtime import run_threads  # noqa: E402

STEPS = 6
MODES = ("sequential", "client-batch", "server-hierarchical")
SHAPES = {  # the model each client's step trains; the 1B shape is random-initialised, never downloaded
    "tiny": {},  # the main job's default model
    "llama-3.2-1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_layers": 16, "num_heads": 32,
                     "num_kv_heads": 8, "vocab_size": 128256, "init_std": 0.02},
}  # fmt: skip


def _config(mode: str, clients: int, shape: str = "tiny", device: str = "cpu"):
    return config_from_dict(
        {
            "model": SHAPES[shape],
            "split": {"mode": mode},
            "train": {"clients": clients, "rounds": 1, "local_steps": STEPS, "batch_size": 16, "device": device},
            "data": {"train_per_client": 96, "eval_per_client": 16},
            "codecs": {"h_A": "raw", "h_B": "raw", "dh_B": "raw", "dh_A": "raw"},
            "transport": {"kind": "inprocess"},
        }
    )


def split_seconds(config) -> float:
    """Training wall time of one split run (model building and evaluation left out)."""
    return run_threads(config).result.extra["train_seconds"]


def centralized_seconds(config) -> float:
    """The unsplit model with the same LoRA trains every client's STEPS batches in turn."""
    tok = CharTokenizer()
    device = config.train.device
    model = base_model(config.model, tok.vocab_size).to(device)
    inject_lora(model.model.layers, targets=config.lora.targets, r=config.lora.r, alpha=config.lora.alpha)
    opt = torch.optim.AdamW(lora_parameters(model).values(), lr=config.train.lr)
    data = build_client_data(config, tok)
    streams = [endless_batches(d, config, k, tok.pad_id) for k, d in enumerate(data)]
    batches = [[{k: v.to(device) for k, v in next(s).items()} for s in streams] for _ in range(STEPS)]
    _sync(device)
    t0 = time.perf_counter()
    for step in batches:
        for batch in step:
            model(**batch).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    _sync(device)
    return time.perf_counter() - t0


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--clients", type=int, nargs="+", default=[2, 4, 8])
    args = parser.parse_args()
    rows = []
    for clients in args.clients:
        configs = {mode: _config(mode, clients, args.shape, args.device) for mode in MODES}
        split_seconds(configs["client-batch"])  # warm-up: kernels, allocator, first-touch
        runs = {mode: [split_seconds(configs[mode]) for _ in range(args.repeats)] for mode in MODES}
        runs["centralized"] = [centralized_seconds(configs["sequential"]) for _ in range(args.repeats)]
        for impl, secs in runs.items():
            rows.append(
                {
                    "case": f"{args.shape}, {clients} clients x {STEPS} steps, batch 16",
                    "impl": impl,
                    "ms": round(1e3 * statistics.mean(secs), 1),
                    "std_ms": round(1e3 * statistics.stdev(secs), 1) if len(secs) > 1 else 0.0,
                    "repeats": len(secs),
                }
            )
            print(f"{clients} clients  {impl:<20} {statistics.mean(secs):7.2f} s +- {rows[-1]['std_ms'] / 1e3:.2f}")
    goals = []
    if args.device == "cpu" or args.shape != "llama-3.2-1b":
        goals = [{"name": "GPU timing table (Llama-3.2-1B shape)", "measured": None, "target": "report", "met": None,
                  "pending": "no GPU in this run"}]  # fmt: skip
    print(f"wrote {write_results('split_modes', rows, goals, out=args.out)}")


if __name__ == "__main__":
    main()
