"""The one job: ``fedcore run [X.toml]`` for every registered method, with a progress bar, summary
tables, ``metrics.jsonl`` and plots.

A TOML's top-level ``algorithm = "..."`` picks the method (no key: the split default); its other
tables are that method's config. Writes ``<output.dir>/<timestamp>/metrics.jsonl`` (config, the
method's records, summary) and ``loss.png`` (plus the method's own plots). At its start a run
writes ``config.json`` (the config, as ``spec.config_to_dict``), and a resumable method's server
``checkpoint/`` after every round: ``fedcore run --resume RUN_DIR`` reads both (``resume_point``)
and goes on in the same directory.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedcore.algorithms import ProgressEvent, ReportTable, RunReport, algorithm_of, algorithms, get_algorithm
from fedcore.algorithms.builders import base_model, data_summary, tokenizer_of
from fedcore.algorithms.registry import Checkpoint
from fedcore.algorithms.split.config import DEFAULT_CONFIG, default_config_text
from fedcore.config import parse_toml, read_toml

from .checkpoint import load_checkpoint, read_json_object
from .export import TextEval, client_shards, evaluate_exported, export_trained
from .metrics import MetricsWriter, plot_curve, plot_loss, read_metrics
from .runner import RunOutcome, run


def load_job_config(path: str | Path | None = None) -> Any:
    """The config of a job file (``None``: the embedded split default): ``algorithm`` picks the
    registered method, the rest is its config; ``ValueError`` with what to write instead."""
    data = parse_toml(default_config_text(), DEFAULT_CONFIG) if path is None else read_toml(path)
    if "method" in data and "algorithm" not in data:
        raise ValueError(f"top-level key 'method' is gone: write algorithm = {data['method']!r} instead")
    name = data.get("algorithm", "split")
    if not isinstance(name, str):
        raise ValueError(f"algorithm must be a string, got {name!r}")
    return get_algorithm(name).config_from_dict(data)


CONFIG_FILE = "config.json"


def write_run_config(config: Any, run_dir: Path) -> Path:
    """``<run_dir>/config.json``: the config a resume of this run reads back."""
    path = Path(run_dir) / CONFIG_FILE
    path.write_text(json.dumps(algorithm_of(config).config_to_dict(config), indent=1) + "\n", encoding="utf-8")
    return path


def resume_point(run_dir: str | Path) -> tuple[Any, Checkpoint]:
    """The config and last checkpoint of an interrupted run in ``run_dir``; ``ValueError`` (one
    line) when its method is not resumable, the files are missing or damaged, or the run finished
    (wrote ``metrics.jsonl``). A checkpoint after the last round resumes into the final
    evaluation and the outputs."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{path} is missing: is {run_dir} the directory of a fedcore run?")
    data = read_json_object(path)
    if not isinstance(data.get("algorithm"), str):
        raise ValueError(f"{path} must be a JSON object with a string 'algorithm'")
    spec = get_algorithm(data["algorithm"])
    if not spec.resumable:
        can = [n for n in algorithms() if get_algorithm(n).resumable]
        raise ValueError(f"algorithm {spec.name!r} does not support resume yet (resumable: {', '.join(can)})")
    if (run_dir / "metrics.jsonl").exists():
        raise ValueError(f"{run_dir} finished (it has metrics.jsonl); nothing to resume")
    config = spec.config_from_dict(data)
    why = spec.resume_refusal(config)
    if why is not None:
        raise ValueError(why)
    return config, load_checkpoint(run_dir)


def progress_done(resume: Checkpoint | None) -> int:
    """How much of ``spec.total`` a checkpoint had done: its state's ``progress`` (in the method's
    own units) or, without one, its rounds."""
    if resume is None:
        return 0
    done = resume.state.get("progress", resume.round)
    return done if isinstance(done, int) and not isinstance(done, bool) else resume.round


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


def run_job(
    config: Any,
    *,
    console: Console | None = None,
    run_dir: Path | None = None,
    resume: Checkpoint | None = None,
) -> Path:
    """Run ``config`` (any registered method's) with progress and summary; returns the run
    directory. ``resume``: go on from that checkpoint of ``run_dir`` (see ``resume_point``)."""
    console = console or Console()
    spec = algorithm_of(config)
    prepare(config, console)
    run_dir = run_dir or new_run_dir(config.output.dir)
    write_run_config(config, run_dir)
    console.print(f"[bold]fedcore[/] {spec.describe(config)}; transport {config.transport.kind}")
    if resume is not None:
        console.print(f"resuming {run_dir} after round {resume.round}")
    with loss_progress(console) as progress:
        done = progress_done(resume)
        task = progress.add_task("training", total=spec.total(config) or None, completed=done, loss=float("nan"))

        def on_progress(event: ProgressEvent) -> None:  # from the server role's thread
            progress.update(task, advance=event.advance, loss=event.loss, description=event.label)

        outcome = run(config, on_progress=on_progress, keys_dir=run_dir / "keys", run_dir=run_dir, resume=resume)
    write_outputs(config, outcome, run_dir, console)
    return run_dir


def prepare(config: Any, console: Console) -> None:
    """What a run needs before any process starts: a GGUF converted once (every process then
    loads the cached folder), the tokenizer, the data loaded, partitioned and encoded. Bad data
    stops the run here with one line (``ValueError``); otherwise one line says what encoding did."""
    spec = algorithm_of(config)
    if config.model.is_pretrained:  # a missing folder or weights, a layout the method cannot use: here
        spec.check_model(config, base_model(config.model, tokenizer_of(config.model).vocab_size))
    console.print(data_summary(config.data, client_shards(spec, config)))


def write_outputs(config: Any, outcome: RunOutcome, run_dir: Path, console: Console) -> None:
    """The exported model and its evaluation (``output.save_model``), ``metrics.jsonl``, the plots
    and the summary tables of a finished run."""
    report = outcome.report
    spec = get_algorithm(outcome.algorithm)
    text: list[TextEval] = []
    if config.output.save_model and report.trained is not None and report.trained.clients:
        artifacts = export_trained(config, report.trained, run_dir)
        text = evaluate_exported(config, report.trained, artifacts, client_shards(spec, config))
        console.print(f"saved the trained model ({report.trained.kind}) under {run_dir / 'model'}")
    with MetricsWriter(run_dir / "metrics.jsonl") as writer:
        writer.write("config", algorithm=outcome.algorithm, config=spec.config_to_dict(config))
        for kind, fields in report.records:
            writer.write(kind, **fields)
        for row in text:
            writer.write("text_eval", **row.record())
        summary = {"wall_seconds": outcome.wall_seconds, **report.summary, "losses": report.losses}
        summary["link_bytes"] = {  # every message at the server's link, all clients together
            "up": sum(outcome.wire.get("received", {}).values()),
            "down": sum(outcome.wire.get("sent", {}).values()),
        }
        if text:
            summary["text_eval"] = [row.record() for row in text]
        writer.write("summary", **summary)
    plots: list[Path] = []
    if config.output.plot:
        plots.append(_plot(outcome, run_dir))
        if report.plots is not None:
            plots += report.plots(run_dir)
    for table in tables(report):
        console.print(table)
    if text:
        console.print(rich_table(text_table(text)))
    console.print(f"wrote {run_dir / 'metrics.jsonl'}" + "".join(f", {p}" for p in plots))


def tables(report: RunReport) -> list[Table]:
    """The report's tables as rich tables."""
    return [rich_table(t) for t in report.tables]


def rich_table(t: ReportTable) -> Table:
    """One ``ReportTable`` as a rich table (cells right-aligned, shown as written: a ``[noise]``
    in a cell is text, not rich markup)."""
    table = Table(title=escape(t.title))
    for col in t.columns:
        table.add_column(escape(col), justify="right")
    for row in t.rows:
        table.add_row(*map(escape, row))
    return table


def text_table(rows: list[TextEval]) -> ReportTable:
    """Per client, base -> exported model: held-out loss, ROUGE-L, exact match."""

    def pair(a: float, b: float, fmt: str) -> str:
        return "-" if a != a or b != b else f"{a:{fmt}} -> {b:{fmt}}"

    cells = [
        [str(r.client), pair(r.loss_before, r.loss_after, ".3f"), pair(r.rouge_l_before, r.rouge_l_after, ".3f"),
         pair(r.exact_before, r.exact_after, ".0%"), str(r.prompts)]
        for r in rows
    ]  # fmt: skip
    title = "the saved model on each client's held-out data: base -> trained"
    return ReportTable(title, ["client", "loss", "ROUGE-L", "exact match", "prompts"], cells)


def _plot(outcome: RunOutcome, run_dir: Path) -> Path:
    path = run_dir / "loss.png"
    records = read_metrics(run_dir / "metrics.jsonl")
    if any(r["type"] == "step" and "client" in r for r in records):  # per-client step losses (split)
        plot_loss(records, path)
    else:
        plot_curve(outcome.report.curve, path, x_label=outcome.report.x_label, title=outcome.algorithm)
    return path
