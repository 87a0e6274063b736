"""Per-client intervals of computation and communication, and their Gantt chart.

Times are wall-clock seconds (``time.time()``) so that intervals recorded in separate processes
on one machine line up; the chart shows them relative to the earliest start.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

KINDS = ("compute", "comm", "apply", "aggregate")
_COLORS = {"compute": "tab:blue", "comm": "tab:orange", "apply": "tab:green", "aggregate": "tab:purple"}


@dataclass(frozen=True)
class Interval:
    """``who`` (e.g. ``"client 3"``, ``"server"``) did ``kind`` in round ``round`` from ``start``
    to ``end`` (seconds since the epoch)."""

    who: str
    kind: str
    round: int
    start: float
    end: float


class Timeline:
    """Thread-safe recorder of intervals (a computation and a communication thread share one)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._items: list[Interval] = []
        self._lock = threading.Lock()

    @contextmanager
    def span(self, who: str, kind: str, rnd: int) -> Iterator[None]:
        """Record the time the ``with`` body takes (also when it raises)."""
        start = time.time()
        try:
            yield
        finally:
            self.add(Interval(who, kind, rnd, start, time.time()))

    def add(self, item: Interval) -> None:
        if item.kind not in KINDS:
            raise ValueError(f"interval kind must be one of {KINDS}, got {item.kind!r}")
        if self.enabled:
            with self._lock:
                self._items.append(item)

    def extend(self, records: list[dict[str, Any]]) -> None:
        """Add intervals received as dicts (another process's ``to_records``)."""
        for r in records:
            self.add(Interval(str(r["who"]), str(r["kind"]), int(r["round"]), float(r["start"]), float(r["end"])))

    def to_records(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(i) for i in sorted(self._items, key=lambda i: (i.start, i.who))]

    def total(self, who: str, kind: str) -> float:
        """Seconds ``who`` spent in ``kind`` (intervals of one kind of one actor do not overlap)."""
        with self._lock:
            return sum(i.end - i.start for i in self._items if i.who == who and i.kind == kind)


def timeline_tensor(records: list[dict[str, Any]]) -> torch.Tensor:
    """Intervals as a (n, 4) float64 tensor [kind index, round, start, end] for the wire (the
    sender is the actor)."""
    rows = [[float(KINDS.index(r["kind"])), float(r["round"]), r["start"], r["end"]] for r in records]
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)


def timeline_records(tensor: torch.Tensor, who: str) -> list[dict[str, Any]]:
    """The inverse of ``timeline_tensor`` for actor ``who``; rows that do not decode are skipped."""
    if tensor.dim() != 2 or tensor.shape[1] != 4:
        return []
    out = []
    for kind, rnd, start, end in tensor.double().tolist():
        if not all(math.isfinite(x) for x in (kind, rnd, start, end)):
            continue
        if 0 <= kind < len(KINDS) and kind == int(kind) and start <= end:
            out.append({"who": who, "kind": KINDS[int(kind)], "round": int(rnd), "start": start, "end": end})
    return out


def overlap_seconds(records: list[dict[str, Any]], who: str, a: str, b: str) -> float:
    """Seconds during which ``who`` had a ``kind == a`` and a ``kind == b`` interval at once."""
    xs = [(r["start"], r["end"]) for r in records if r["who"] == who and r["kind"] == a]
    ys = [(r["start"], r["end"]) for r in records if r["who"] == who and r["kind"] == b]
    return sum(max(0.0, min(x1, y1) - max(x0, y0)) for x0, x1 in xs for y0, y1 in ys)


def plot_timeline(records: list[dict[str, Any]], path: str | Path, *, title: str = "") -> None:
    """Gantt chart: one row per actor, computation and communication as two thin lanes, so
    where they overlap both lanes are filled at the same time; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    if not records:
        raise ValueError("no intervals to plot (was the timeline enabled?)")
    t0 = min(r["start"] for r in records)
    actors = sorted({r["who"] for r in records}, key=lambda w: (w != "server", w))
    lanes = {"compute": 0.0, "apply": 0.0, "aggregate": 0.0, "comm": 0.42}
    fig, ax = plt.subplots(figsize=(10, 0.5 + 0.45 * len(actors)), dpi=120)
    for row, who in enumerate(actors):
        for r in records:
            if r["who"] != who:
                continue
            y = row + lanes[r["kind"]] - 0.4
            ax.broken_barh([(r["start"] - t0, r["end"] - r["start"])], (y, 0.38), color=_COLORS[r["kind"]])
    ax.set_yticks(range(len(actors)), actors, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since start")
    ax.set_title(title or "timeline: computation (lower lane) and communication (upper lane)", fontsize=9)
    kinds = sorted({r["kind"] for r in records}, key=KINDS.index)
    ax.legend(handles=[Patch(color=_COLORS[k], label=k) for k in kinds], fontsize=7, loc="upper right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
