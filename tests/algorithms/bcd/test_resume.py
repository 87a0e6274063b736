"""BCD resume: the server emits a Checkpoint with every round's report; a fresh server restored
from one of them (saved to and loaded from disk) with fresh clients, which it sends the global
model (FedCyBGD: each client's own copy), their stream positions and (ParaBlock) their updates in
flight, ends bit for bit as the uninterrupted run. The sampler, the schedules and FedCyBGD's
compression sampler carry over."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fedcore.algorithms.bcd import CompressionConfig, tiny_bcd_config
from fedcore.algorithms.registry import BuiltProgressEvent
from fedcore.runtime import run_threads
from fedcore.runtime.checkpoint import load_checkpoint, save_checkpoint

ROUNDS = 5


def rounds_of(outcome) -> list[dict]:
    return [
        {k: v for k, v in asdict.items() if k != "seconds"}
        for asdict in map(dataclasses.asdict, outcome.result.records)
    ]


CASES = {
    "fedbcd-random": dict(method="fedbcd", schedule="random"),
    "fedbcd-gradient": dict(method="fedbcd", schedule="gradient"),
    "fedcybgd": dict(method="fedcybgd"),
    "fedcybgd-compressed": dict(method="fedcybgd", compression=CompressionConfig(enabled=True, prune_ratio=0.5)),
    "parablock-gradient": dict(method="parablock", schedule="gradient"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_restored_server_finishes_as_the_uninterrupted_run(tmp_path, case):
    config = tiny_bcd_config(rounds=ROUNDS, participation=0.6, **CASES[case])
    events: list[BuiltProgressEvent] = []
    full = run_threads(config, on_progress=lambda e: events.append(e.built()))
    ckpts = [e.checkpoint for e in events]
    assert all(c is not None for c in ckpts)
    if config.method == "parablock":  # round t's report: the cut before round t + 1, t's uploads pending
        assert [c.round for c in ckpts] == [*range(ROUNDS - 1), ROUNDS]
        assert all(c.state["pending"] for c in ckpts[:-1]) and "pending" not in ckpts[-1].state
    else:
        assert [c.round for c in ckpts] == list(range(1, ROUNDS + 1))
    save_checkpoint(tmp_path, ckpts[2])  # through the disk
    resumed = run_threads(config, resume=load_checkpoint(tmp_path))
    assert sorted(resumed.result.final_params) == sorted(full.result.final_params)
    for name, want in full.result.final_params.items():
        assert torch.equal(resumed.result.final_params[name], want), name
    assert rounds_of(resumed) == rounds_of(full)
    assert resumed.report.losses == full.report.losses
    # and the checkpoint is not the end state: the rounds after it did change the model
    assert any(not torch.equal(ckpts[2].tensors["global/" + n], t) for n, t in full.result.final_params.items())


def test_parablock_resumes_from_its_closing_checkpoint_without_a_second_sync(tmp_path):
    config = tiny_bcd_config(method="parablock", rounds=3)
    events: list[BuiltProgressEvent] = []
    full = run_threads(config, on_progress=lambda e: events.append(e.built()))
    resumed = run_threads(config, resume=events[-1].checkpoint)
    for name, want in full.result.final_params.items():
        assert torch.equal(resumed.result.final_params[name], want), name
    assert resumed.report.losses == full.report.losses  # the clients hold the global model exactly
    assert [r.round for r in resumed.result.records] == [0, 1, 2]


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


def test_parablock_with_staleness_above_one_neither_checkpoints_nor_resumes():
    config = tiny_bcd_config(method="parablock", rounds=3, staleness=2)
    events: list[BuiltProgressEvent] = []
    run_threads(config, on_progress=lambda e: events.append(e.built()))
    assert events and all(e.checkpoint is None for e in events)
    one = tiny_bcd_config(method="parablock", rounds=3)
    one_events: list[BuiltProgressEvent] = []
    run_threads(one, on_progress=lambda e: one_events.append(e.built()))
    with pytest.raises(ValueError, match="resumes with staleness = 1 only"):
        run_threads(config, resume=one_events[0].checkpoint)


def test_a_checkpoint_of_another_method_is_refused():
    events: list[BuiltProgressEvent] = []
    run_threads(tiny_bcd_config(method="fedbcd", rounds=2), on_progress=lambda e: events.append(e.built()))
    with pytest.raises(ValueError, match="checkpoint of fedbcd with 3 clients, not of fedcybgd"):
        run_threads(tiny_bcd_config(method="fedcybgd", rounds=2), resume=events[0].checkpoint)


def test_parablock_resume_does_not_wait_for_an_upload_it_never_had(caplog):
    """A participant whose round-t upload was late or refused has no update in the checkpoint:
    the resumed server neither hands it one nor waits for it in the redone aggregate."""
    config = tiny_bcd_config(method="parablock", rounds=4, round_timeout_s=30.0)
    events: list[BuiltProgressEvent] = []
    run_threads(config, on_progress=lambda e: events.append(e.built()))
    ckpt = events[1].checkpoint
    lost = min(ckpt.state["pending"])
    pending = {k: v for k, v in ckpt.state["pending"].items() if k != lost}
    tensors = {k: v for k, v in ckpt.tensors.items() if not k.startswith(f"pending/{lost}/")}
    damaged = dataclasses.replace(ckpt, tensors=tensors, state={**ckpt.state, "pending": pending})
    with caplog.at_level("WARNING", logger="fedcore.bcd"):
        resumed = run_threads(config, resume=damaged)
    assert not any("late" in r.getMessage() for r in caplog.records)
    redone = resumed.result.records[ckpt.round]
    assert int(lost) in redone.participants and int(lost) not in redone.included
    assert resumed.result.wall_seconds < config.round_timeout_s


def test_a_closing_parablock_checkpoint_does_not_resume_a_longer_run():
    events: list[BuiltProgressEvent] = []
    run_threads(tiny_bcd_config(method="parablock", rounds=3), on_progress=lambda e: events.append(e.built()))
    with pytest.raises(ValueError, match="checkpoint after the closing sync of 3 rounds; rounds = 5"):
        run_threads(tiny_bcd_config(method="parablock", rounds=5), resume=events[-1].checkpoint)
