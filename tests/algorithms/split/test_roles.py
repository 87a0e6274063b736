"""The split roles give the same run in one process (threads) and over real processes + CURVE."""

from __future__ import annotations

import pytest

from fedcore.algorithms.split.config import config_from_dict
from fedcore.runtime import run_processes, run_threads

SMALL = {
    "model": {"hidden_size": 32, "num_layers": 3},
    "lora": {"r": 4, "alpha": 8.0},
    "train": {"clients": 2, "rounds": 2, "local_steps": 3, "batch_size": 8},
    "data": {"train_per_client": 48, "eval_per_client": 8},
}


@pytest.mark.parametrize(
    ("mode", "micro_batches"),
    [("sequential", 1), ("client-batch", 1), ("server-hierarchical", 1), ("client-batch", 3)],
)
def test_inprocess_and_processes_agree(tmp_path, mode, micro_batches):
    split = {"mode": mode, "avg_period": 2 if mode != "sequential" else 0, "micro_batches": micro_batches}
    config = config_from_dict({**SMALL, "split": split})
    local = run_threads(config).result
    outcome = run_processes(config, keys_dir=tmp_path / "keys")
    remote = outcome.result
    assert local.eval_start == remote.eval_start  # same seeds, same math: bit-identical losses
    assert local.eval_end == remote.eval_end
    assert [s.loss for s in local.steps] == [s.loss for s in remote.steps]
    assert len(remote.steps) == 2 * 2 * 3
    for tag in ("h_A", "h_B", "dh_B", "dh_A"):
        # the socket path counts headers too: within a few hundred bytes per message of in-process
        assert remote.wire_messages[tag] == local.wire_messages[tag]
        assert 0 <= remote.wire_bytes[tag] - local.wire_bytes[tag] <= 1024 * remote.wire_messages[tag]
    assert outcome.transport == "zmq+curve"
    assert sum(local.eval_end) < sum(local.eval_start)
