"""``fedcore privacy X.toml``: the sweep's files and table, and one-line refusals of bad studies."""

from __future__ import annotations

import json

import pytest

from fedcore.cli import main
from fedcore.runtime.privacy_study import load_study

STUDY = """
[study]
blocks_a = [0, 1]
sigma = [0.0, 2.0]
sigma_relative = []
attacks = ["nearest", "ridge"]
shadow_examples = 32
victims = 1
utility = {utility}
[model]
hidden_size = 64
[train]
clients = 2
rounds = 1
local_steps = 2
[data]
train_per_client = 48
eval_per_client = 16
"""


def test_the_study_writes_its_rows_plot_and_table(tmp_path, capsys):
    path = tmp_path / "study.toml"
    path.write_text(STUDY.format(utility="true"))
    assert main(["privacy", str(path), "--out", str(tmp_path / "runs")]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    rows = [json.loads(line) for line in (run_dir / "privacy.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 2 and (run_dir / "privacy.png").stat().st_size > 10_000
    clear = {r["attack"]: r for r in rows if r["blocks_a"] == 0 and r["sigma"] == 0}
    assert clear["nearest"]["token_recovery"] == 100.0 and clear["nearest"]["rouge_l"] == pytest.approx(100.0)
    assert clear["ridge"]["token_recovery"] > 80
    noisy = [r for r in rows if r["blocks_a"] == 0 and r["sigma"] == 2.0]
    assert all(r["token_recovery"] < 50 for r in noisy)
    assert all(r["trained"] and r["eval_loss"] > 0 and r["rouge_l_utility"] is None for r in rows)  # no prompts
    assert "privacy vs utility" in capsys.readouterr().out


@pytest.mark.parametrize(
    "edit, replacement",
    [
        ("blocks_a = [0, 1]", "blocks_a = [0, 3]"),
        ("sigma = [0.0, 2.0]", "sigma = [-1.0]"),
        ('attacks = ["nearest", "ridge"]', 'attacks = ["guess"]'),
        ("victims = 1", "victims = 2"),
    ],
)
def test_bad_studies_are_refused_with_one_line(tmp_path, capsys, edit, replacement):
    path = tmp_path / "study.toml"
    path.write_text(STUDY.format(utility="false").replace(edit, replacement))
    code = main(["privacy", str(path), "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("fedcore privacy: ") and "\n" not in err, err


def test_the_embedded_default_study_loads():
    study = load_study(None)
    assert study.study.blocks_a == [0, 1, 2, 4] and study.base.model.num_layers == 6
