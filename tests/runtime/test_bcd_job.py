"""`fedcore run BCD.toml` (algorithm = "parablock" etc.): a block-coordinate-descent job end to end,
and the example configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedcore.cli import main
from fedcore.runtime import load_job_config
from fedcore.runtime.metrics import read_metrics

SHORT = """
algorithm = "parablock"
clients = 2
rounds = 3
local_steps = 2
batch_size = 8
[model]
hidden_size = 32
num_layers = 4
[data]
train_per_client = 24
eval_per_client = 8
max_len = 32
[transport]
kind = "inprocess"
"""


def test_fedcore_run_bcd_writes_metrics_and_plots(tmp_path):
    config = tmp_path / "short.toml"
    config.write_text(SHORT)
    assert main(["run", str(config), "--out", str(tmp_path / "runs")]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    records = read_metrics(run_dir / "metrics.jsonl")
    rounds = [r for r in records if r["type"] == "round"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    (summary,) = [r for r in records if r["type"] == "summary"]
    assert summary["method"] == "parablock" and summary["upload_bytes"] > 0
    assert (run_dir / "loss.png").stat().st_size > 5000 and (run_dir / "timeline.png").stat().st_size > 5000


def test_bad_bcd_config_is_a_clear_error(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text('algorithm = "fedsgd"\n')
    assert main(["run", str(config)]) == 2
    assert "unknown algorithm 'fedsgd'; registered: [" in capsys.readouterr().err
    config.write_text('algorithm = "fedbcd"\nschedule = "zigzag"\n')
    assert main(["run", str(config)]) == 2
    assert "schedule must be one of ('random'" in capsys.readouterr().err


def test_an_old_method_key_names_the_new_one(tmp_path, capsys):
    config = tmp_path / "old.toml"
    config.write_text('method = "parablock"\nrounds = 2\n')
    assert main(["run", str(config)]) == 2
    assert "top-level key 'method' is gone: write algorithm = 'parablock' instead" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[2] / "examples" / "bcd").glob("*.toml")))
def test_every_bcd_example_loads(path):
    config = load_job_config(path)
    assert config.method in ("fedbcd", "parablock", "fedcybgd")
