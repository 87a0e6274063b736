"""Run outputs: metrics JSONL (one JSON object per line) and the loss plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsWriter:
    """Appends one JSON object per line to ``path``; every record carries a ``type`` field."""

    def __init__(self, path: Path):
        self.path = path
        self._file = path.open("w", encoding="utf-8")

    def write(self, type_: str, **fields: Any) -> None:
        self._file.write(json.dumps({"type": type_, **fields}, sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a metrics JSONL file, in order."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_loss(records: list[dict[str, Any]], path: Path, *, window: int = 5) -> None:
    """Training loss per client against the global step (moving average over ``window`` of the
    client's steps), with each client's start/end eval loss as markers; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in records if r["type"] == "step"]
    evals = [r for r in records if r["type"] == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for client in sorted({r["client"] for r in steps}):
        mine = [r for r in steps if r["client"] == client]
        xs = [r["step"] for r in mine]
        losses = [r["loss"] for r in mine]
        smooth = [
            sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1])
            for i in range(len(losses))
        ]
        # break the line where other clients trained in between (sequential mode)
        px, py = [], []
        for i, (x, y) in enumerate(zip(xs, smooth, strict=True)):
            if i and x != xs[i - 1] + 1:
                px.append(float("nan"))
                py.append(float("nan"))
            px.append(x)
            py.append(y)
        (line,) = ax.plot(px, py, lw=1.2, label=f"client {client} (train)")
        for e in evals:
            if e["client"] == client:
                x = 0 if e["when"] == "start" else (xs[-1] if xs else 0)
                ax.plot([x], [e["loss"]], marker="o" if e["when"] == "start" else "s", color=line.get_color())
    ax.set_xlabel("global step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("split fine-tuning: training loss (lines), eval loss at start/end (markers)")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_curve(points: list[tuple[float, float]], path: Path, *, x_label: str, title: str) -> None:
    """One loss curve (``points``: (x, loss in nats/token)) saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot([x for x, _ in points], [y for _, y in points], marker=".")
    ax.set_xlabel(x_label)
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
