"""The ``fedcore privacy [X.toml]`` job: the study with a progress bar, then ``privacy.jsonl``,
``privacy.png`` and the privacy-utility table under ``<output.dir>/<timestamp>/``."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from .privacy_report import plot_study, study_table, write_rows
from .privacy_study import Study, run_study


def run_privacy_job(study: Study, *, out: str | Path | None = None, console: Console | None = None) -> Path:
    """Run ``study``; returns its run directory."""
    from .job import loss_progress, new_run_dir, rich_table

    console = console or Console()
    sc = study.study
    run_dir = new_run_dir(out or study.base.output.dir)
    levels = len(sc.noise_levels(sc.blocks_a[0]))
    total = len(sc.blocks_a) * levels * len(sc.codecs) * len(sc.attacks)
    console.print(
        f"[bold]fedcore privacy[/]: Blocks_A {sc.blocks_a} x {levels} noise levels x codecs "
        f"{sc.codecs} x {len(sc.attacks)} attacks{', each cell trained' if sc.utility else ''}"
    )
    rows = []
    with loss_progress(console) as progress:
        task = progress.add_task("study", total=total, loss=float("nan"))
        for row in run_study(study):
            rows.append(row)
            label = f"Blocks_A {row['blocks_a']} sigma {row['sigma']:g} {row['attack']}"
            loss = row["eval_loss"] if row["eval_loss"] is not None else float("nan")
            progress.update(task, advance=1, description=label, loss=loss)
    jsonl = write_rows(rows, run_dir / "privacy.jsonl")
    plot = plot_study(rows, run_dir / "privacy.png") if study.base.output.plot else None
    console.print(rich_table(study_table(rows)))
    console.print(f"wrote {jsonl}" + (f", {plot}" if plot else ""))
    return run_dir
