"""A client process killed mid-round is dropped; the server and the other clients finish the run."""

from __future__ import annotations

import math

import pytest

from fedcore.runtime.config import config_from_dict
from fedcore.runtime.launch import run_split_processes


@pytest.mark.parametrize("mode", ["client-batch", "sequential", "server-hierarchical"])
def test_killed_client_is_dropped_and_the_run_goes_on(tmp_path, mode):
    config = config_from_dict(
        {
            "model": {"hidden_size": 32, "num_layers": 3},
            "lora": {"r": 4, "alpha": 8.0},
            "split": {"mode": mode},
            "train": {"clients": 3, "rounds": 2, "local_steps": 3, "batch_size": 8},
            "data": {"train_per_client": 48, "eval_per_client": 8},
            "transport": {"lease_s": 8.0},
        }
    )
    procs: list = []
    killed: list[int] = []

    def kill_client_1(report):
        if not killed and report.step >= 1:
            procs[1].kill()  # no goodbye: the server learns it from the lease
            killed.append(report.step)

    result = run_split_processes(config, keys_dir=tmp_path / "keys", on_spawn=procs.extend, on_step=kill_client_1)
    assert killed and list(result.extra["dropped"]) == [1]
    assert math.isnan(result.eval_end[1])
    assert all(math.isfinite(result.eval_end[k]) and result.eval_end[k] < result.eval_start[k] for k in (0, 2))
    steps = {k: sum(1 for s in result.steps if s.client == k) for k in range(3)}
    assert steps[0] == steps[2] == 2 * 3 and steps[1] < 2 * 3
