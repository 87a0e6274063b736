"""FedBCD resume: the server emits a Checkpoint after every round; a fresh server restored from
the one after round 2 (saved to and loaded from disk) with fresh clients, which it sends the
global model and their stream positions, ends bit-for-bit as the uninterrupted run; the sampler,
the random and the gradient schedules carry over; ParaBlock and FedCyBGD refuse resume."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fedcore.algorithms.bcd import tiny_bcd_config
from fedcore.algorithms.registry import BuiltProgressEvent
from fedcore.runtime import run_threads
from fedcore.runtime.checkpoint import load_checkpoint, save_checkpoint

ROUNDS = 5


def rounds_of(outcome) -> list[dict]:
    return [
        {k: v for k, v in asdict.items() if k != "seconds"}
        for asdict in map(dataclasses.asdict, outcome.result.records)
    ]


@pytest.mark.parametrize("schedule", ["random", "gradient"])
def test_a_restored_server_finishes_as_the_uninterrupted_run(tmp_path, schedule):
    config = tiny_bcd_config(method="fedbcd", rounds=ROUNDS, participation=0.6, schedule=schedule)
    events: list[BuiltProgressEvent] = []
    full = run_threads(config, on_progress=lambda e: events.append(e.built()))
    ckpts = [e.checkpoint for e in events]
    assert [c.round for c in ckpts] == list(range(1, ROUNDS + 1))
    save_checkpoint(tmp_path, ckpts[1])  # after round 2, through the disk
    resumed = run_threads(config, resume=load_checkpoint(tmp_path))
    assert sorted(resumed.result.final_params) == sorted(full.result.final_params)
    for name, want in full.result.final_params.items():
        assert torch.equal(resumed.result.final_params[name], want), name
    assert rounds_of(resumed) == rounds_of(full)
    assert resumed.report.losses == full.report.losses
    # and the checkpoint of round 2 is not the end state: the rounds after it did change the model
    assert any(not torch.equal(ckpts[1].tensors["global/" + n], t) for n, t in full.result.final_params.items())


def test_a_checkpoint_that_does_not_fit_is_refused(tmp_path):
    config = tiny_bcd_config(method="fedbcd", rounds=3)
    events: list[BuiltProgressEvent] = []
    run_threads(config, on_progress=lambda e: events.append(e.built()))
    ckpt = events[0].checkpoint
    assert ckpt is not None
    other = dataclasses.replace(config, clients=2)
    with pytest.raises(ValueError, match="3 clients, not of fedbcd with 2"):
        run_threads(other, resume=ckpt)
    bad = dataclasses.replace(ckpt, tensors={k: v[..., :1] for k, v in ckpt.tensors.items()})
    with pytest.raises(ValueError, match="do not fit"):
        run_threads(config, resume=bad)


@pytest.mark.parametrize("method", ["parablock", "fedcybgd"])
def test_methods_with_client_held_state_do_not_checkpoint_or_resume(method):
    config = tiny_bcd_config(method=method, rounds=2)
    events: list[BuiltProgressEvent] = []
    run_threads(config, on_progress=lambda e: events.append(e.built()))
    assert events and all(e.checkpoint is None for e in events)
    fake = tiny_bcd_config(method="fedbcd", rounds=2)
    fedbcd_events: list[BuiltProgressEvent] = []
    run_threads(fake, on_progress=lambda e: fedbcd_events.append(e.built()))
    with pytest.raises(ValueError, match="does not support resume"):
        run_threads(config, resume=fedbcd_events[0].checkpoint)
