"""The end of a Flower-hosted fedcore run: the method's own result becomes fedcore's ``RunOutcome``
(``spec.report``: the same tables, records and losses as ``fedcore run``), handed to the caller's
``on_outcome``, written as JSON to ``run_config["flower.result"]`` when set, and as a full fedcore
run directory (metrics, plots, the exported model) under ``output.dir`` when ``flower.outputs``."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from fedcore.algorithms import algorithm_of

Outcome = Callable[[Any], None]  # gets the RunOutcome


def finish_run(
    config: Any,
    result: Any,
    wire: dict[str, Any],
    *,
    transport: str,
    t0: float,
    run_config: dict[str, Any],
    on_outcome: Outcome | None = None,
) -> Any:
    """Report ``result`` (the method's server result) as fedcore does; returns the ``RunOutcome``."""
    from fedcore.runtime.job import new_run_dir, write_outputs
    from fedcore.runtime.runner import _outcome

    outcome = _outcome(algorithm_of(config), config, result, wire, transport, t0)
    if on_outcome is not None:
        on_outcome(outcome)
    path = run_config.get("flower.result")
    if isinstance(path, str) and path:
        record = {
            "algorithm": outcome.algorithm,
            "transport": transport,
            "losses": outcome.report.losses,
            "curve": outcome.report.curve,
            "summary": outcome.report.summary,
            "wire": wire,
            "wall_seconds": time.perf_counter() - t0,
        }
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(record, default=_json, allow_nan=True))
    if flag(run_config.get("flower.outputs", False)):
        write_outputs(config, outcome, new_run_dir(config.output.dir), Console())
    return outcome


def flag(value: Any) -> bool:
    """A run_config switch: a bool, or a string such as "true" / "false" (``--run-config`` quotes)."""
    if isinstance(value, str):
        if value.strip().lower() not in ("true", "false", "1", "0", "yes", "no", ""):
            raise ValueError(f"a run_config switch must be true or false, got {value!r}")
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _json(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
