"""``fedcore run BCD.toml``: a FedBCD / ParaBlock / FedCyBGD run with progress and a summary.

Writes ``<output.dir>/<timestamp>/metrics.jsonl`` (config, one record per round, summary),
``loss.png`` (training loss per round) and ``timeline.png`` (compute and communication per
client), and prints the final held-out loss and the bytes each way.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fedcore.algorithms.bcd import BCDConfig, BCDResult, RoundRecord, bcd_config_to_dict, plot_timeline, run_bcd

from .main_job import loss_progress, new_run_dir
from .metrics import MetricsWriter


def run_bcd_job(config: BCDConfig, *, console: Console | None = None, run_dir: Path | None = None) -> Path:
    """Run ``config``; returns the run directory."""
    console = console or Console()
    run_dir = run_dir or new_run_dir(config.output.dir)
    m = config.model
    console.print(
        f"[bold]fedcore[/] {config.method}: tiny {m.family} ({m.num_layers} layers, hidden {m.hidden_size}, "
        f"{config.num_blocks} blocks, {config.mode}), {config.clients} clients, {config.rounds} rounds of "
        f"K={config.local_steps}, schedule {config.schedule}, transport {config.transport.kind}"
        + (f" at {config.transport.mbps} MB/s" if config.transport.mbps else "")
    )
    with MetricsWriter(run_dir / "metrics.jsonl") as writer:
        writer.write("config", config=bcd_config_to_dict(config))
        with loss_progress(console) as progress:
            task = progress.add_task("rounds", total=config.rounds, loss=float("nan"))

            def on_record(rec: RoundRecord) -> None:
                writer.write("round", **dataclasses.asdict(rec))
                progress.update(task, advance=1, loss=rec.train_loss)

            result = run_bcd(config, on_record=on_record)
        writer.write("summary", **_summary(result))
    if config.output.plot:
        _plot_loss(result, run_dir / "loss.png")
        if result.timeline:
            plot_timeline(result.timeline, run_dir / "timeline.png", title=f"{config.method}: compute vs comm")
    console.print(_table(result))
    console.print(f"wrote {run_dir / 'metrics.jsonl'}" + (" and the plots" if config.output.plot else ""))
    return run_dir


def _summary(result: BCDResult) -> dict:
    return {
        "method": result.method,
        "eval_loss": result.eval_loss,
        "final_loss": result.final_loss,
        "download_bytes": result.download_bytes,
        "upload_bytes": result.upload_bytes,
        "wire": result.wire,
        "wall_seconds": result.wall_seconds,
        "dropped": {str(k): v for k, v in result.dropped.items()},
    }


def _table(result: BCDResult) -> Table:
    table = Table(title=f"{result.method}: held-out loss under the final global model, bytes counted at the server")
    for col in ("final loss", "download MiB", "upload MiB", "rounds", "seconds", "dropped"):
        table.add_column(col, justify="right")
    table.add_row(
        f"{result.final_loss:.4f}",
        f"{result.download_bytes / 2**20:,.2f}",
        f"{result.upload_bytes / 2**20:,.2f}",
        str(len(result.records)),
        f"{result.wall_seconds:.1f}",
        ", ".join(str(k) for k in result.dropped) or "-",
    )
    return table


def _plot_loss(result: BCDResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot([r.round + 1 for r in result.records], [r.train_loss for r in result.records], marker=".")
    ax.set_xlabel("round")
    ax.set_ylabel("training loss (nats/token)")
    ax.set_title(f"{result.method}: mean training loss of the included clients per round", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
