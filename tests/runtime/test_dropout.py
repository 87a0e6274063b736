"""A client process killed mid-round is dropped; the server and the other clients finish the run."""

from __future__ import annotations

import math
import time

import pytest

from fedcore.algorithms.split.config import config_from_dict
from fedcore.runtime import run_processes


@pytest.mark.parametrize(
    ("mode", "micro_batches"),
    [("client-batch", 1), ("sequential", 1), ("server-hierarchical", 1), ("client-batch", 2)],
)
def test_killed_client_is_dropped_and_the_run_goes_on(tmp_path, mode, micro_batches):
    config = config_from_dict(
        {
            "model": {"hidden_size": 32, "num_layers": 3},
            "lora": {"r": 4, "alpha": 8.0},
            "split": {"mode": mode, "micro_batches": micro_batches},
            "train": {"clients": 3, "rounds": 2, "local_steps": 3, "batch_size": 8},
            "data": {"train_per_client": 48, "eval_per_client": 8},
            "transport": {"lease_s": 8.0},
        }
    )
    procs: list = []
    killed: list[int] = []

    def kill_client_1(report):  # None: a round's checkpoint event
        if report is not None and not killed and report.step >= 1:
            procs[1].kill()  # no goodbye: the server learns it from the lease
            killed.append(report.step)

    result = run_processes(
        config, keys_dir=tmp_path / "keys", on_spawn=procs.extend, on_progress=lambda e: kill_client_1(e.record)
    ).result
    assert killed and list(result.extra["dropped"]) == [1]
    assert math.isnan(result.eval_end[1])
    assert all(math.isfinite(result.eval_end[k]) and result.eval_end[k] < result.eval_start[k] for k in (0, 2))
    steps = {k: sum(1 for s in result.steps if s.client == k) for k in range(3)}
    assert steps[0] == steps[2] == 2 * 3 and steps[1] < 2 * 3


@pytest.mark.parametrize("mode", ["client-batch", "sequential", "server-hierarchical"])
def test_killed_client_restarted_rejoins_at_a_later_round(tmp_path, mode, caplog):
    from fedcore.algorithms.split.spec import SPEC
    from fedcore.runtime.processes import spawn_client

    rounds = 8
    config = config_from_dict(
        {
            "model": {"hidden_size": 32, "num_layers": 3},
            "lora": {"r": 4, "alpha": 8.0},
            "split": {"mode": mode},
            "train": {"clients": 3, "rounds": rounds, "local_steps": 2, "batch_size": 8},
            "data": {"train_per_client": 48, "eval_per_client": 8},
            "transport": {"lease_s": 6.0},
        }
    )
    keys = tmp_path / "keys"
    procs: list = []
    address: list[str] = []
    events: dict[str, object] = {}

    def kill_then_restart(report):
        if "killed" not in events and report.step >= 1:
            procs[1].kill()  # dropped by the lease during round 0
            events["killed"] = report.round
        elif "killed" in events and "restarted" not in events and report.round >= 1:
            events["restarted"] = spawn_client(
                SPEC.config_to_dict(config), 1, address[0], str(keys / "client-1.key_secret"), str(keys / "server.key")
            )
        elif "restarted" in events and not any("is back" in r.getMessage() for r in caplog.records):
            time.sleep(1.0)  # slow the rounds down until the new process has started and said hello

    with caplog.at_level("WARNING", logger="fedcore.split"):
        try:
            result = run_processes(
                config,
                keys_dir=keys,
                on_spawn=procs.extend,
                on_server=address.append,
                on_progress=lambda e: e.record is None or kill_then_restart(e.record),  # None: a checkpoint
            ).result
        finally:
            back = events.get("restarted")
            if back is not None and back.poll() is None:  # type: ignore[union-attr]
                back.wait(30)  # type: ignore[union-attr]
    assert events["killed"] == 0 and "restarted" in events
    assert list(result.extra["rejoined"]) == [1] and not result.extra["dropped"]
    back_at = result.extra["rejoined"][1]
    assert 2 <= back_at < rounds
    assert any(s.client == 1 and s.round >= back_at for s in result.steps)  # it trains again
    assert math.isfinite(result.eval_end[1])
