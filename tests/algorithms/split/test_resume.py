"""Split resume, every mode: after each round the server collects every client's state (AdamW,
LR schedule, noise stream, int8+noise codec stream, data position) into a Checkpoint with its
own (body LoRA, AdamW and schedule; one per replica in server-hierarchical mode); a fresh server
and fresh clients restored from round 2's (through the disk) end bit-for-bit as the
uninterrupted run. A checkpoint of another mode or shape is refused with one line."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fedcore.algorithms import get_algorithm
from fedcore.algorithms.registry import BuiltProgressEvent
from fedcore.runtime import run_threads
from fedcore.runtime.checkpoint import load_checkpoint, save_checkpoint

SPEC = get_algorithm("split")
TABLES = {
    "algorithm": "split",
    "model": {"hidden_size": 32, "num_layers": 3, "num_heads": 4, "num_kv_heads": 2},
    "lora": {"r": 4, "alpha": 8.0},
    "split": {"mode": "sequential"},
    "train": {"clients": 2, "rounds": 4, "local_steps": 2, "batch_size": 8},
    "data": {"train_per_client": 16, "eval_per_client": 8, "max_len": 32},
    "transport": {"kind": "inprocess"},
}


def checkpoints(config, **kw) -> tuple[list, object]:
    events: list[BuiltProgressEvent] = []
    outcome = run_threads(config, on_progress=lambda e: events.append(e.built()), **kw)
    assert not outcome.client_errors
    return [e.checkpoint for e in events if e.checkpoint is not None], outcome


CASES = {
    "sequential-int8+noise": ("sequential", "int8+noise"),
    "sequential-raw": ("sequential", "raw"),
    "client-batch": ("client-batch", "int8+noise"),
    "server-hierarchical": ("server-hierarchical", "int8+noise"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_restored_run_ends_as_the_uninterrupted_one(tmp_path, case):
    mode, h_a_codec = CASES[case]
    config = SPEC.config_from_dict({**TABLES, "split": {"mode": mode}, "codecs": {"h_A": h_a_codec}})
    full, full_outcome = checkpoints(config)
    assert [c.round for c in full] == [1, 2, 3, 4]
    save_checkpoint(tmp_path, full[1])
    resumed, outcome = checkpoints(config, resume=load_checkpoint(tmp_path))
    assert [c.round for c in resumed] == [3, 4]
    want, got = full[-1].tensors, resumed[-1].tensors
    assert sorted(got) == sorted(want)
    for name in want:  # body LoRA, head/tail average, every optimizer and generator state
        assert torch.equal(got[name], want[name]), name
    steps = [(s.round, s.client, s.step, s.loss, s.tokens) for s in outcome.result.steps]
    assert steps == [(s.round, s.client, s.step, s.loss, s.tokens) for s in full_outcome.result.steps]
    assert outcome.report.losses == full_outcome.report.losses
    assert outcome.result.eval_start == full_outcome.result.eval_start  # not evaluated again


def test_a_checkpoint_of_another_mode_is_refused():
    sequential = SPEC.config_from_dict({**TABLES, "train": {**TABLES["train"], "rounds": 1}})
    (ckpt,), _ = checkpoints(sequential)
    config = dataclasses.replace(sequential, split=dataclasses.replace(sequential.split, mode="client-batch"))
    with pytest.raises(ValueError, match="checkpoint of split sequential with 2 clients does not fit"):
        run_threads(config, resume=ckpt)


def test_a_checkpoint_of_another_run_is_refused():
    config = SPEC.config_from_dict({**TABLES, "train": {**TABLES["train"], "rounds": 1}})
    (ckpt,), _ = checkpoints(config)
    wider = SPEC.config_from_dict({**TABLES, "lora": {"r": 8, "alpha": 16.0}})
    with pytest.raises(ValueError, match="body LoRA does not fit"):
        run_threads(wider, resume=ckpt)
