"""The study's outputs: ``privacy.jsonl`` (one row per measurement, strict JSON), the
privacy-utility table and the plot (leakage against loss, one curve per Blocks_A)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedcore.algorithms import ReportTable


def strict(value: Any) -> Any:
    """``value`` with every non-finite float as None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict(v) for v in value]
    return value


def write_rows(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    path.write_text("".join(json.dumps(strict(r), sort_keys=True) + "\n" for r in rows), encoding="utf-8")
    return path


def noise_label(row: dict[str, Any]) -> str:
    if row.get("dp_multiplier"):
        return f"DP z {row['dp_multiplier']:g} (eps {row['epsilon']:.3g})"
    if not row["sigma"]:
        return "none"
    return f"{row['sigma']:g} x mean|h_A|" if row["relative"] else f"{row['sigma']:g}"


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, fmt)


def strongest(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (Blocks_A, noise, codec): the row of the attack with the highest token recovery."""
    best: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        key = (r["blocks_a"], r["sigma"], r["relative"], r.get("dp_multiplier"), r["codec"])
        if key not in best or r["token_recovery"] > best[key]["token_recovery"]:
            best[key] = r
    return list(best.values())


def study_table(rows: Sequence[dict[str, Any]]) -> ReportTable:
    """One line per (Blocks_A, noise, codec): the strongest attack's scores beside the utility."""
    cells = [
        [str(r["blocks_a"]), noise_label(r), r["codec"], _cell(r["mean_abs_h_a"], ".3f"), r["attack"],
         _cell(r["token_recovery"], ".1f"), _cell(r["rouge_l"], ".1f"), _cell(r["bleu_4"], ".1f"),
         _cell(r["eval_loss"], ".3f"), _cell(r["rouge_l_utility"], ".1f")]
        for r in strongest(rows)
    ]  # fmt: skip
    columns = ["Blocks_A", "noise sigma", "codec", "mean|h_A|", "strongest attack", "tokens %", "ROUGE-L",
               "BLEU-4", "eval loss", "task ROUGE-L"]  # fmt: skip
    return ReportTable("privacy vs utility (attack on other clients' held-out h_A)", columns, cells)


def plot_study(rows: Sequence[dict[str, Any]], path: Path, *, title: str = "") -> Path:
    """Token recovery of the strongest attack against eval loss (or against sigma without a
    utility run), one curve per Blocks_A, absolute-sigma points only, first codec."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = strongest(rows)
    codec = best[0]["codec"] if best else "raw"
    trained = any(r["eval_loss"] is not None for r in best)
    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=120)
    for blocks_a in sorted({r["blocks_a"] for r in best}):
        mine = sorted(
            (
                r
                for r in best
                if r["blocks_a"] == blocks_a
                and r["codec"] == codec
                and not r["relative"]
                and not r.get("dp_multiplier")
            ),  # fmt: skip
            key=lambda r: r["sigma"],
        )
        xs = [r["eval_loss"] if trained else r["sigma"] for r in mine]
        (line,) = ax.plot(xs, [r["token_recovery"] for r in mine], marker="o", label=f"Blocks_A = {blocks_a}")
        for x, r in zip(xs, mine, strict=True):
            ax.annotate(f"{r['sigma']:g}", (x, r["token_recovery"]), fontsize=6, color=line.get_color())
    ax.set_xlabel("held-out loss after training (nats/token)" if trained else "noise sigma (absolute)")
    if not trained:
        ax.set_xscale("symlog", linthresh=0.01)
    ax.set_ylabel("tokens read back by the strongest attack (%)")
    ax.set_title(title or f"privacy vs utility, h_A codec {codec} (labels: sigma)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
