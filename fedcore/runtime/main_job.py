"""The main job: ``fedcore run [CONFIG.toml]``, split fine-tuning with progress and a summary.

Writes ``<output.dir>/<timestamp>/metrics.jsonl`` (config, steps, evals, summary) and
``loss.png``, and prints a table of per-client loss, throughput and bytes per direction.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedcore.algorithms.split import SplitRunResult, StepReport, run_split_inprocess

from .config import RunConfig, config_to_dict
from .launch import run_split_processes
from .metrics import MetricsWriter, plot_loss, read_metrics

DIRECTIONS = (
    ("h_A", "client -> server"),
    ("h_B", "server -> client"),
    ("dh_B", "client -> server"),
    ("dh_A", "server -> client"),
    ("eval_h_A", "client -> server"),
    ("eval_h_B", "server -> client"),
    ("lora_up", "client -> server"),
    ("lora_down", "server -> client"),
    ("control", "both ways"),
    ("ack", "both ways"),
)


def loss_progress(console: Console) -> Progress:
    """A progress bar with the latest loss (a task's ``loss`` field) and the elapsed time."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
    )
    return Progress(*columns, console=console, transient=False)


def new_run_dir(base: str | Path) -> Path:
    """``base/<UTC timestamp>``, made unique with a suffix if two runs start in the same second."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    path = Path(base) / stamp
    n = 1
    while path.exists():
        path = Path(base) / f"{stamp}-{n}"
        n += 1
    path.mkdir(parents=True)
    return path


def run_main_job(config: RunConfig, *, console: Console | None = None, run_dir: Path | None = None) -> Path:
    """Run the split fine-tuning job of ``config``; returns the run directory."""
    console = console or Console()
    run_dir = run_dir or new_run_dir(config.output.dir)
    tc = config.train
    total = tc.rounds * tc.clients * tc.local_steps
    console.print(
        f"[bold]fedcore[/] split fine-tuning: tiny {config.model.family} "
        f"({config.model.num_layers} layers, head {config.split.blocks_a} / body "
        f"{config.model.num_layers - config.split.blocks_a - config.split.blocks_c} / tail "
        f"{config.split.blocks_c}), {tc.clients} clients, mode {config.split.mode}, "
        f"noise std {config.noise.std}{' x mean|h_A|' if config.noise.relative else ''}, codecs "
        f"h_A {config.codecs.h_A} / h_B {config.codecs.h_B} / dh_B {config.codecs.dh_B} / dh_A {config.codecs.dh_A}"
    )
    with MetricsWriter(run_dir / "metrics.jsonl") as writer:
        writer.write("config", config=config_to_dict(config))
        with loss_progress(console) as progress:
            task = progress.add_task("training", total=total, loss=float("nan"))

            def on_step(rec: StepReport) -> None:  # called by the server as each step completes
                progress.update(
                    task, advance=1, loss=rec.loss, description=f"round {rec.round + 1}/{tc.rounds} client {rec.client}"
                )

            if config.transport.kind == "zmq":
                result = run_split_processes(config, on_step=on_step, keys_dir=run_dir / "keys")
            else:
                result = run_split_inprocess(config, on_step=on_step)
        for rec in result.steps:  # the clients' own timings arrive with their reports
            writer.write("step", **dataclasses.asdict(rec))
        for k, (start, end) in enumerate(zip(result.eval_start, result.eval_end, strict=True)):
            writer.write("eval", client=k, when="start", loss=start)
            writer.write("eval", client=k, when="end", loss=end)
        writer.write("summary", **_summary(result))
    if config.output.plot:
        plot_loss(read_metrics(run_dir / "metrics.jsonl"), run_dir / "loss.png")
    console.print(_table(result))
    console.print(f"wrote {run_dir / 'metrics.jsonl'}" + (f" and {run_dir / 'loss.png'}" if config.output.plot else ""))
    return run_dir


def _summary(result: SplitRunResult) -> dict:
    return {
        "eval_loss_start": result.eval_start,
        "eval_loss_end": result.eval_end,
        "tokens": result.tokens,
        "train_seconds": result.train_seconds,
        "tokens_per_second": result.tokens_per_second(),
        "wire_bytes": result.wire_bytes,
        "wire_messages": result.wire_messages,
        "wall_seconds": result.wall_seconds,
        "transport": result.extra.get("transport"),
        "client_train_examples": result.client_sizes,
    }


def _table(result: SplitRunResult) -> Table:
    table = Table(title="split fine-tuning summary (eval loss on each client's held-out data)")
    for col in ("client", "examples", "loss start", "loss end", "change", "tokens/s"):
        table.add_column(col, justify="right")
    for k, (start, end) in enumerate(zip(result.eval_start, result.eval_end, strict=True)):
        table.add_row(
            str(k),
            str(result.client_sizes[k]),
            f"{start:.3f}",
            f"{end:.3f}",
            f"{(end - start) / start:+.0%}",
            f"{result.tokens_per_second(k):,.0f}",
        )
    wire = Table(title=f"bytes across the split ({result.extra.get('transport')}, counted at the server)")
    for col in ("tensor", "direction", "MiB", "messages"):
        wire.add_column(col, justify="right")
    for kind, direction in DIRECTIONS:
        wire.add_row(
            kind, direction, f"{result.wire_bytes.get(kind, 0) / 2**20:,.2f}", str(result.wire_messages.get(kind, 0))
        )
    outer = Table.grid(padding=1)
    outer.add_row(table)
    outer.add_row(wire)
    return outer
