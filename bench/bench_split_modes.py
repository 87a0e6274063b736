"""Split training modes side by side (the analogue of FedSEA-LLaMA's Table 7): sequential vs
client-batch vs server-hierarchical with 2 / 4 / 8 clients vs centralized training on the same
samples, mean +- std of wall time over repeats.

Each split run trains every client ``STEPS`` steps (one round, batch 16) in one process (threads,
InProcessHub: the roles and messages of the multi-process job without socket costs) and includes
one evaluation batch per client at start and end; centralized trains the unsplit model with the
same LoRA for clients x STEPS steps of the same batches. CPU: the tiny default model. GPU figures
(a Llama-3.2-1B-shaped model) are pending a GPU run.

    python bench/bench_split_modes.py [--repeats 5] [--out PATH]
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

from fedcore.algorithms.split import run_split_inprocess  # noqa: E402
from fedcore.algorithms.split.setup import build_client_data, endless_batches  # noqa: E402
from fedcore.data import CharTokenizer  # noqa: E402
from fedcore.lora import inject_lora, lora_parameters  # noqa: E402
from fedcore.model.tiny import tiny_causal_lm  # noqa: E402
from fedcore.runtime.config import config_from_dict  # noqa: E402

STEPS = 6
MODES = ("sequential", "client-batch", "server-hierarchical")


def _config(mode: str, clients: int):
    return config_from_dict(
        {
            "split": {"mode": mode},
            "train": {"clients": clients, "rounds": 1, "local_steps": STEPS, "batch_size": 16},
            "data": {"train_per_client": 96, "eval_per_client": 16},
            "codecs": {"h_A": "raw", "h_B": "raw", "dh_B": "raw", "dh_A": "raw"},
            "transport": {"kind": "inprocess"},
        }
    )


def split_seconds(mode: str, clients: int) -> float:
    t0 = time.perf_counter()
    run_split_inprocess(_config(mode, clients))
    return time.perf_counter() - t0


def centralized_seconds(clients: int) -> float:
    config = _config("sequential", clients)
    tok = CharTokenizer()
    t0 = time.perf_counter()
    mc = config.model
    model = tiny_causal_lm(mc.family, vocab_size=tok.vocab_size, hidden_size=mc.hidden_size,
                           num_layers=mc.num_layers, num_heads=mc.num_heads, num_kv_heads=mc.num_kv_heads,
                           seed=mc.seed, initializer_range=mc.init_std)  # fmt: skip
    model.requires_grad_(False)
    inject_lora(model.model.layers, targets=config.lora.targets, r=config.lora.r, alpha=config.lora.alpha)
    opt = torch.optim.AdamW(lora_parameters(model).values(), lr=config.train.lr)
    data = build_client_data(config, tok)
    streams = [endless_batches(d, config, k, tok.pad_id) for k, d in enumerate(data)]
    for _ in range(STEPS):
        for stream in streams:
            batch = next(stream)
            model(**batch).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for clients in (2, 4, 8):
        runs = {mode: [split_seconds(mode, clients) for _ in range(args.repeats)] for mode in MODES}
        runs["centralized"] = [centralized_seconds(clients) for _ in range(args.repeats)]
        for impl, secs in runs.items():
            rows.append(
                {
                    "case": f"{clients} clients x {STEPS} steps, batch 16",
                    "impl": impl,
                    "ms": round(1e3 * statistics.mean(secs), 1),
                    "std_ms": round(1e3 * statistics.stdev(secs), 1) if len(secs) > 1 else 0.0,
                    "repeats": len(secs),
                }
            )
            print(f"{clients} clients  {impl:<20} {statistics.mean(secs):7.2f} s +- {rows[-1]['std_ms'] / 1e3:.2f}")
    goals = [{"name": "GPU timing table (Llama-3.2-1B shape)", "measured": None, "target": "report", "met": None,
              "pending": "no GPU in this run"}]  # fmt: skip
    print(f"wrote {write_results('split_modes', rows, goals, out=args.out)}")


if __name__ == "__main__":
    main()
