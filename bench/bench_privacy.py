"""What the server reads from h_A: FL-GLM's Table 4 design and the privacy-utility study, on the
tiny default and on a real base (SmolLM2-135M-Instruct, chatterbot corpus).

    python bench/bench_privacy.py [--only tiny|real] [--quick]

Writes bench/results/privacy-<device>.json (rows: Table 4 side by side with the paper, then one row
per (base, Blocks_A, noise, codec, attack)) and bench/results/privacy-{tiny,real}-<device>.png
(token recovery of the strongest attack against held-out loss, one curve per Blocks_A). Every
attack is fitted on client 0's h_A (shadow data) and scored on clients 1-2's held-out h_A. One run
on this machine; the attacks' and runs' seeds are fixed.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, device_slug, write_results  # noqa: E402

from fedcore.algorithms.builders import tokenizer_of  # noqa: E402
from fedcore.algorithms.split.config import config_from_dict  # noqa: E402
from fedcore.algorithms.split.setup import build_client_data, build_split  # noqa: E402
from fedcore.config import parse_toml  # noqa: E402
from fedcore.data import batches  # noqa: E402
from fedcore.privacy import capture  # noqa: E402
from fedcore.runtime.privacy_report import plot_study, strict, strongest  # noqa: E402
from fedcore.runtime.privacy_study import Study, StudyConfig, run_study  # noqa: E402

# FL-GLM (Table 4): the server's inverter F^-1 trained on a colluding client's data
FLGLM_TABLE4 = {
    0: {"attack": "linear", "rouge_1": 33.29, "rouge_2": 7.05, "rouge_l": 26.73, "bleu_4": 28.57},
    1: {"attack": "transformer", "rouge_1": 0.14, "rouge_2": 0.002, "rouge_l": 0.47, "bleu_4": 0.34},
}
PAPER_ATTACK = {"linear": "linear (trained softmax regression)", "transformer": "one-block transformer"}

TINY = """
[model]
hidden_size = 128
num_layers = 6
[train]
clients = 3
rounds = 3
local_steps = 8
[data]
train_per_client = 160
eval_per_client = 32
"""

REAL = """
[model]
pretrained = "smollm2-135m-instruct"
[split]
blocks_c = 2
[lora]
r = 8
alpha = 16.0
targets = ["q", "v"]
[data]
path = "chatterbot"
partition = "dirichlet"
dirichlet_alpha = 0.5
train_per_client = 128
eval_per_client = 16
max_len = 128
generate = 6
max_new_tokens = 24
[train]
clients = 3
rounds = 2
local_steps = 6
batch_size = 4
lr = 0.001
"""


def base_of(name: str):
    return config_from_dict(parse_toml(TINY if name == "tiny" else REAL, f"{name}.toml"))


def median_row_norm(base, blocks_a: int, examples: int) -> float:
    """Median L2 norm of a token's h_A row on the base head (client 0's first examples): where
    the Gaussian mechanism's clip bound C is put for that depth."""
    config = copy.deepcopy(base)
    config.split.blocks_a = blocks_a
    tok = tokenizer_of(config.model)
    data = build_client_data(config, tok)[0]
    head = build_split(config, tok).head.eval()
    rows = capture(head, batches(data.train[:examples], 8, seed=0, pad_id=tok.pad_id, shuffle=False)).rows()[0]
    return float(rows.norm(dim=-1).median())


def run(study: Study, label: str) -> list[dict[str, Any]]:
    rows = []
    t0 = time.perf_counter()
    for row in run_study(study):
        row = {"base": label, **row}
        rows.append(row)
        print(
            f"{label:5} Blocks_A {row['blocks_a']} sigma {row['sigma']:<6g} rel {row['relative']!s:5} "
            f"z {row['dp_multiplier'] or 0:<3g} {row['codec']:4} {row['attack']:14} "
            f"tokens {row['token_recovery']:5.1f}% "
            f"ROUGE-L {row['rouge_l']:5.1f} BLEU-4 {row['bleu_4']:5.1f} loss {row['eval_loss'] or 0:.3f} "
            f"[{time.perf_counter() - t0:.0f}s]",
            flush=True,
        )
    return rows


def table4(name: str, quick: bool) -> list[dict[str, Any]]:
    """Embedding only vs one client block, linear vs one-block-transformer inverter, no noise,
    h_A sent raw, on the base weights (FL-GLM's design)."""
    sc = StudyConfig(
        blocks_a=[0, 1], sigma=[0.0], sigma_relative=[], codecs=["raw"], attacks=["linear", "transformer"],
        shadow_examples=64 if quick else 128, utility=False,
    )  # fmt: skip
    rows = run(Study(sc, base_of(name)), name)
    out = []
    for r in rows:
        paper = FLGLM_TABLE4[r["blocks_a"]]
        out.append(
            {
                "case": f"table4 {name} Blocks_A {r['blocks_a']} {PAPER_ATTACK[r['attack']]}",
                **{
                    k: r[k]
                    for k in (
                        "base",
                        "blocks_a",
                        "attack",
                        "token_recovery",
                        "rouge_1",
                        "rouge_2",
                        "rouge_l",
                        "bleu_4",
                        "shadow_tokens",
                        "victim_tokens",
                    )
                },  # fmt: skip
                "paper": paper if paper["attack"] == r["attack"] else None,
            }
        )
    return out


def sweep(name: str, quick: bool) -> list[dict[str, Any]]:
    """Blocks_A x noise (absolute, relative, the Gaussian mechanism) with utility."""
    base = base_of(name)
    blocks = [0, 1, 2, 4]
    shadow = 64 if quick else 128
    clips = [round(median_row_norm(base, b, shadow), 3) for b in blocks]
    attacks = list(StudyConfig().attacks) if name == "tiny" else ["least_squares", "ridge", "linear", "transformer"]
    sigma = [0.0, 0.1, 0.5, 2.0] if name == "tiny" else [0.0, 0.5, 2.0]
    sc = StudyConfig(
        blocks_a=blocks, sigma=[0.0, 0.5] if quick else sigma, sigma_relative=[0.02], codecs=["int8"],
        attacks=attacks[:2] if quick else attacks, shadow_examples=shadow, utility=True,
        dp_clip=clips, dp_multipliers=[4.0] if quick or name == "real" else [2.0, 8.0],
    )  # fmt: skip
    print(
        f"{name}: clip bounds C (median row norm of the base h_A) per Blocks_A {dict(zip(blocks, clips, strict=True))}"
    )
    rows = run(Study(sc, base), name)
    plot_study(rows, RESULTS / f"privacy-{name}-{device_slug()}.png", title=f"{name}: privacy vs utility (int8 h_A)")
    return [{"case": f"sweep {name}", "dp_clip": sc.clip_for(r["blocks_a"]), **r} for r in rows]


def codecs(name: str, quick: bool) -> list[dict[str, Any]]:
    """The wire codec as a perturbation: raw fp32 against int8 (per-token absmax rounding), with
    and without noise, on the base weights."""
    sc = StudyConfig(
        blocks_a=[0, 1, 4], sigma=[0.0, 0.1, 0.5], sigma_relative=[], codecs=["raw", "int8"],
        attacks=["nearest", "least_squares", "ridge", "linear"], shadow_examples=64 if quick else 128, utility=False,
    )  # fmt: skip
    return [{"case": f"codecs {name}", **r} for r in run(Study(sc, base_of(name)), name)]


PARTS = {"table4": table4, "sweep": sweep, "codecs": codecs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["tiny", "real"], help="one base only")
    parser.add_argument("--quick", action="store_true", help="fewer levels and attacks (a smoke run)")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS), help="what to run")
    parser.add_argument("--out", type=Path, help="results JSON (default bench/results/privacy-<device>.json)")
    args = parser.parse_args()
    bases = [args.only] if args.only else ["tiny", "real"]
    rows: list[dict[str, Any]] = []
    for part in args.parts:
        for name in bases:
            rows += PARTS[part](name, args.quick)
    path = write_results("privacy", strict(rows), [], out=args.out)
    head = f"{'case':58} {'tokens %':>8} {'R-1':>6} {'R-2':>6} {'R-L':>6} {'BLEU-4':>7}"
    print(f"\n{head}   FL-GLM R-1 / R-2 / R-L / BLEU-4")
    for r in rows:
        if r["case"].startswith("table4"):
            p = r["paper"]
            paper = f"{p['rouge_1']} / {p['rouge_2']} / {p['rouge_l']} / {p['bleu_4']}" if p else "-"
            print(f"{r['case']:58} {r['token_recovery']:8.1f} {r['rouge_1']:6.1f} {r['rouge_2']:6.1f} "
                  f"{r['rouge_l']:6.1f} {r['bleu_4']:7.1f}   {paper}")  # fmt: skip
    cases = sorted({r["case"] for r in rows if not r["case"].startswith("table4")})
    best = [b for case in cases for b in strongest([r for r in rows if r["case"] == case])]
    columns = f"{'case':12} {'A':>2} {'noise':>24} {'codec':>5} {'strongest':>14} {'tokens %':>8}"
    print(f"\n{columns} {'loss':>7} {'task R-L':>8}")
    for r in best:
        noise = f"DP z {r['dp_multiplier']:g} eps {r['epsilon']:.3g}" if r["dp_multiplier"] else (
            f"{r['sigma']:g}{' x mean|h_A|' if r['relative'] else ''}")  # fmt: skip
        utility = r["rouge_l_utility"]
        task = "-" if utility is None or math.isnan(utility) else f"{utility:.1f}"
        loss = "-" if r["eval_loss"] is None else f"{r['eval_loss']:.3f}"
        print(f"{r['case']:12} {r['blocks_a']:>2} {noise:>24} {r['codec']:>5} {r['attack']:>14} "
              f"{r['token_recovery']:8.1f} {loss:>7} {task:>8}")  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
