"""Shared benchmark plumbing: device description, versions, timing, and the results JSON shape
(../shared/BENCH.md): suite, command, device, versions, date, limits, rows, goals."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def device_name() -> str:
    """The GPU's name, or the CPU model with its core count."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} cores)"


def device_slug() -> str:
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name().lower()
        match = re.search(r"(h100|h200|a100|l40s|b200|a10g|t4)", name)
        return match.group(1) if match else re.sub(r"[^a-z0-9]+", "-", name).strip("-")
    return "cpu"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("triton", "transformers"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = "absent"
    sha = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    out["fedcore"] = (sha or "unknown") + ("+dirty" if dirty else "")
    return out


def _git(*args: str) -> str:
    """stdout of ``git args`` in this checkout, or "" where git or the repository is missing."""
    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def median_ms(fn: Callable[[], object], *, warmup: int = 3, repeats: int = 15) -> float:
    """Median wall time of ``fn`` in ms after ``warmup`` calls (CUDA synchronised around each)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def goal(name: str, measured: float, target: str) -> dict:
    """A goal row; ``met`` is computed from ``target`` (``"<= x"`` or ``">= x"``), never typed."""
    op, value = target.split()
    met = measured <= float(value) if op == "<=" else measured >= float(value)
    return {"name": name, "measured": round(measured, 4), "target": target, "met": met}


def pending_goal(name: str, target: str, why: str) -> dict:
    """A goal row that this run cannot measure (no GPU, too few cores): ``why`` says what it needs."""
    return {"name": name, "measured": None, "target": target, "met": None, "pending": why}


def write_results(
    suite: str, rows: list[dict], goals: list[dict], *, out: Path | None = None, limits: dict | None = None
) -> Path:
    path = out or RESULTS / f"{suite}-{device_slug()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "suite": suite,
        "command": "python " + " ".join([os.path.relpath(sys.argv[0], Path(__file__).parents[1])] + sys.argv[1:]),
        "device": device_name(),
        "versions": versions(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "limits": limits or {},
        "rows": rows,
        "goals": goals,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def print_table(rows: list[dict], goals: list[dict]) -> None:
    print(f"{'case':<34} {'impl':<14} {'ms':>10}")
    for r in rows:
        extra = f"  {r['share_of_limit']:.1%} of limit" if "share_of_limit" in r else ""
        if "ratio" in r:
            print(f"{r['case']:<34} {r['impl']:<14} {'x' + str(r['ratio']):>10}")
        else:
            print(f"{r['case']:<34} {r['impl']:<14} {r['ms']:>10.3f}{extra}")
    for g in goals:
        print(f"goal: {g['name']}: measured {g['measured']} target {g['target']} met {g['met']}")
