"""FibecFed ablations in the style of the paper's Section 5.7, on the synthetic task: FibecFed vs
FedIT vs FibecFed without curriculum / with every layer global / without neuron selection.

Non-IID Dirichlet(1) over skills, 100 clients, 10 sampled per round, a tiny Llama (4 layers,
hidden 64, LoRA r 8 on q and v), fixed seeds, in-process simulation (``run_fibecfed``). Reported
per variant: exact-match and answer-token accuracy at equal rounds, rounds and wall time to a
target (90% of the best final token accuracy of any variant in this run), uplink bytes, and the
initialization phase's seconds. Writes bench/results/fibecfed-<device>.json and a plot.

    python bench/bench_fibecfed.py [--rounds 30] [--out PATH]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, device_slug, write_results  # noqa: E402

from fedcore.algorithms.fibecfed import FibecFedConfig, run_fibecfed  # noqa: E402

VARIANTS = {
    "FibecFed": {},
    "FedIT": {"method": "fedit"},
    "no curriculum": {"curriculum": False},
    "all layers GAL": {"gal_ratio": 1.0},
    "no neuron selection": {"neuron_selection": False},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    runs = {}
    for name, switch in VARIANTS.items():
        config = FibecFedConfig(
            clients=args.clients, per_round=args.per_round, rounds=args.rounds, device=args.device, **switch
        )
        runs[name] = run_fibecfed(config)
        r = runs[name]
        print(f"{name:<20} token acc {r.token_accuracy[-1]:.3f} exact {r.accuracy[-1]:.3f} "
              f"uplink {sum(r.uplink_bytes) / 2**20:.2f} MiB init {r.init_seconds:.1f} s", flush=True)  # fmt: skip
    target = 0.9 * max(r.token_accuracy[-1] for r in runs.values())
    rows = []
    for name, r in runs.items():
        hit = next((t for t, a in enumerate(r.token_accuracy) if a >= target), None)
        rows.append(
            {
                "case": f"{args.clients} clients, {args.per_round}/round, {args.rounds} rounds, Dirichlet(1)",
                "impl": name,
                "ms": round(1e3 * sum(r.round_seconds), 1),
                "final_exact_match": round(r.accuracy[-1], 4),
                "final_token_accuracy": round(r.token_accuracy[-1], 4),
                "final_eval_loss": round(r.eval_loss[-1], 4),
                "target_token_accuracy": round(target, 4),
                "rounds_to_target": None if hit is None else hit + 1,
                "seconds_to_target": None if hit is None else round(sum(r.round_seconds[: hit + 1]), 2),
                "uplink_MiB": round(sum(r.uplink_bytes) / 2**20, 3),
                "init_seconds": round(r.init_seconds, 2),
                "global_layers": r.global_layers,
                "token_accuracy_per_round": [round(a, 4) for a in r.token_accuracy],
                "eval_loss_per_round": [round(v, 4) for v in r.eval_loss],
            }
        )
    fib, fedit = runs["FibecFed"], runs["FedIT"]
    goals = [
        {
            "name": "uplink FibecFed / FedIT (GAL fraction 0.75)",
            "measured": round(sum(fib.uplink_bytes) / sum(fedit.uplink_bytes), 4),
            "target": "report",
            "met": None,
        },  # fmt: skip
        {
            "name": "final token accuracy FibecFed - FedIT",
            "measured": round(fib.token_accuracy[-1] - fedit.token_accuracy[-1], 4),
            "target": "report",
            "met": None,
        },  # fmt: skip
    ]
    path = write_results("fibecfed", rows, goals, out=args.out)
    print(f"wrote {path}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for name, r in runs.items():
            ax.plot(range(1, len(r.token_accuracy) + 1), r.token_accuracy, label=name)
        ax.set_xlabel("round")
        ax.set_ylabel("answer-token accuracy (teacher forced)")
        ax.legend()
        fig.tight_layout()
        png = (args.out.parent if args.out else RESULTS) / f"fibecfed-{device_slug()}.png"
        fig.savefig(png, dpi=120)
        print(f"wrote {png}")
    except ImportError:
        pass
    for row in rows:
        print(f"{row['impl']:<20} tok {row['final_token_accuracy']:.3f} exact {row['final_exact_match']:.3f} "
              f"to-target {row['rounds_to_target']} rounds / {row['seconds_to_target']} s "
              f"uplink {row['uplink_MiB']} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
