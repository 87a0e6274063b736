"""The main job end to end: `fedcore run` on a short config writes its files and learns."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fedcore.runtime.metrics import read_metrics

SHORT = """
[model]
hidden_size = 64
[train]
clients = 2
rounds = 3
local_steps = 10
[data]
train_per_client = 96
eval_per_client = 16
"""


def test_fedcore_run_writes_metrics_and_plot_and_loss_falls(tmp_path):
    config = tmp_path / "short.toml"
    config.write_text(SHORT)
    env = dict(os.environ, PYTHONSAFEPATH="1", COLUMNS="120")
    cli = Path(sys.executable).with_name("fedcore")
    proc = subprocess.run(
        [str(cli), "run", str(config), "--out", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "loss.png").stat().st_size > 10_000
    records = read_metrics(run_dir / "metrics.jsonl")
    assert records[0]["type"] == "config" and records[-1]["type"] == "summary"
    steps = [r for r in records if r["type"] == "step"]
    assert len(steps) == 2 * 3 * 10
    summary = records[-1]
    for start, end in zip(summary["eval_loss_start"], summary["eval_loss_end"], strict=True):
        assert end < 0.8 * start, (start, end)
    assert {"h_A", "h_B", "dh_B", "dh_A", "lora_up", "lora_down"} <= set(summary["wire_bytes"])
    assert summary["transport"] == "zmq+curve"  # the default runs a server and client processes, CURVE on
    secrets = sorted((run_dir / "keys").glob("*.key_secret"))
    assert [p.name for p in secrets] == ["client-0.key_secret", "client-1.key_secret", "server.key_secret"]
    assert all(p.stat().st_mode & 0o077 == 0 for p in secrets)
    assert "loss start" in proc.stdout and "bytes across the split" in proc.stdout
    leak = [r for r in records if r["type"] == "leakage"]  # the leakage line, next to the loss
    assert len(leak) == 1 and 0 <= leak[0]["token_recovery"] <= 100 and leak[0]["victims"] == [1]
    assert summary["leakage"]["token_recovery"] == leak[0]["token_recovery"] and summary["privacy"] is None
    assert "what the server can read from h_A" in proc.stdout and "held-out tokens" in proc.stdout


def test_fedcore_run_refuses_a_bad_config(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[train]\nclientz = 2\n")
    cli = Path(sys.executable).with_name("fedcore")
    proc = subprocess.run(
        [str(cli), "run", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONSAFEPATH="1"),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "unknown key(s) ['clientz'] in [train]" in proc.stderr
