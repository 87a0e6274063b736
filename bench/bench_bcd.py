"""Convergence of FedBCD, ParaBlock and FedCyBGD (with and without the compressed download) on
the synthetic task: a tiny Llama (10 layers, hidden 64, one layer per block, full-parameter
blocks), 10 clients, Dirichlet(0.1) over skills, fixed seeds, in-process (threads).

FedBCD and ParaBlock train one block per round on every client (``--rounds``); FedCyBGD visits
every client once per round and each trains its own block, so one of its rounds updates all 10
blocks once (``--cyclic-rounds``, default 10: 100 block updates, one client each). Reported per
method: the per-round training loss curve, the final held-out loss under the global model,
download and upload bytes. Goals (issue #9): ParaBlock's final loss within 3% of FedBCD's;
FedCyBGD compressed within 5% of uncompressed at <= 0.6x the download bytes. Writes
bench/results/bcd-<device>.json and a plot.

    python bench/bench_bcd.py [--rounds 30] [--cyclic-rounds 10] [--out PATH]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, device_slug, goal, write_results  # noqa: E402

from fedcore.algorithms.bcd import BCDConfig, CompressionConfig, run_bcd  # noqa: E402

COMPRESSED = dict(enabled=True, drop_ratio=0.5, prune_ratio=0.75)


def variants(rounds: int, cyclic_rounds: int) -> dict[str, BCDConfig]:
    return {
        "FedBCD": BCDConfig(method="fedbcd", rounds=rounds),
        "ParaBlock": BCDConfig(method="parablock", rounds=rounds),
        "FedCyBGD": BCDConfig(method="fedcybgd", rounds=cyclic_rounds),
        "FedCyBGD compressed (structured)": BCDConfig(
            method="fedcybgd", rounds=cyclic_rounds, compression=CompressionConfig(prune="structured", **COMPRESSED)
        ),
        "FedCyBGD compressed (magnitude)": BCDConfig(
            method="fedcybgd", rounds=cyclic_rounds, compression=CompressionConfig(prune="magnitude", **COMPRESSED)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--cyclic-rounds", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)  # ten client threads share the cores
    runs, rows = {}, []
    for name, config in variants(args.rounds, args.cyclic_rounds).items():
        r = runs[name] = run_bcd(config)
        print(f"{name:<34} final loss {r.final_loss:.4f} down {r.download_bytes / 2**20:8.2f} MiB "
              f"up {r.upload_bytes / 2**20:7.2f} MiB  {r.wall_seconds:.0f} s", flush=True)  # fmt: skip
        rows.append(
            {
                "case": f"tiny Llama 10x64, 10 clients, Dirichlet(0.1), {config.rounds} rounds, K={config.local_steps}",
                "impl": name,
                "ms": round(1e3 * r.wall_seconds, 1),
                "final_eval_loss": round(r.final_loss, 4),
                "download_MiB": round(r.download_bytes / 2**20, 3),
                "upload_MiB": round(r.upload_bytes / 2**20, 3),
                "train_loss_per_round": [round(x.train_loss, 4) for x in r.records],
                "compression": config.compression.__dict__ if config.compression.enabled else None,
            }
        )
    bcd, para, cy = runs["FedBCD"], runs["ParaBlock"], runs["FedCyBGD"]
    goals = [goal("ParaBlock final loss / FedBCD final loss", para.final_loss / bcd.final_loss, "<= 1.03")]
    for kind in ("structured", "magnitude"):
        packed = runs[f"FedCyBGD compressed ({kind})"]
        name = f"FedCyBGD compressed ({kind}) / uncompressed"
        goals.append(goal(f"{name} final loss", packed.final_loss / cy.final_loss, "<= 1.05"))
        goals.append(goal(f"{name} download bytes", packed.download_bytes / cy.download_bytes, "<= 0.6"))
    path = write_results("bcd", rows, goals, out=args.out)
    print(f"wrote {path}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in ("FedBCD", "ParaBlock"):
        axes[0].plot(range(1, args.rounds + 1), [x.train_loss for x in runs[name].records], label=name)
    axes[0].set_xlabel("round (one block, all clients)")
    for name, r in runs.items():
        if name.startswith("FedCyBGD"):
            axes[1].plot(range(1, len(r.records) + 1), [x.train_loss for x in r.records], label=name)
    axes[1].set_xlabel("round (every client's turn once)")
    for ax in axes:
        ax.set_ylabel("training loss (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    png = (args.out.parent if args.out else RESULTS) / f"bcd-{device_slug()}.png"
    fig.savefig(png, dpi=120)
    print(f"wrote {png}")
    for g in goals:
        print(f"goal: {g['name']}: measured {g['measured']} target {g['target']} met {g['met']}")


if __name__ == "__main__":
    main()
