"""FibecFed resume: each round's report carries a Checkpoint (the global GAL state, the sampler, the
roster, the results, and every client's LoRA state, Fisher row sums, curriculum order and RNG,
collected with ``save``); a fresh server restored from the one after round 2 (through the disk)
with fresh clients skips the init phase, hands every client its part back and ends bit for bit
as the uninterrupted run, with and without the curriculum (the client RNG's batch order)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fedcore.algorithms.fibecfed import FibecFedConfig
from fedcore.algorithms.registry import BuiltProgressEvent
from fedcore.runtime import run_threads
from fedcore.runtime.checkpoint import load_checkpoint, save_checkpoint

ROUNDS = 4


def config(**kw) -> FibecFedConfig:
    base = dict(clients=4, per_round=2, rounds=ROUNDS, eval_clients=2, samples_per_client=16, gal_ratio=0.5)
    return FibecFedConfig(**{**base, **kw})


def results_of(result) -> dict:
    out = dataclasses.asdict(result)
    out.pop("round_seconds")
    out.pop("init_seconds")
    return {k: v for k, v in out.items() if k not in ("final_state", "client_states")}


@pytest.mark.parametrize("curriculum", [True, False])
def test_a_restored_server_finishes_as_the_uninterrupted_run(tmp_path, curriculum):
    c = config(curriculum=curriculum)
    events: list[BuiltProgressEvent] = []
    full = run_threads(c, on_progress=lambda e: events.append(e.built())).result
    ckpts = [e.checkpoint for e in events]
    assert [k.round for k in ckpts] == list(range(1, ROUNDS + 1))
    assert sorted(ckpts[1].state["client_states"]) == ["0", "1", "2", "3"]
    save_checkpoint(tmp_path, ckpts[1])
    resumed = run_threads(c, resume=load_checkpoint(tmp_path)).result
    assert sorted(resumed.final_state) == sorted(full.final_state) and full.final_state
    for name, want in full.final_state.items():
        assert torch.equal(resumed.final_state[name], want), name
    assert results_of(resumed) == results_of(full)
    assert sorted(resumed.client_states) == sorted(full.client_states) and full.client_states
    for k, state in full.client_states.items():  # what the run exports: every evaluated client's LoRA
        assert all(torch.equal(resumed.client_states[k][n], t) for n, t in state.items()), k
    assert any(not torch.equal(ckpts[1].tensors["global/" + n], t) for n, t in full.final_state.items())


def test_a_checkpoint_that_does_not_fit_is_refused():
    events: list[BuiltProgressEvent] = []
    run_threads(config(rounds=2), on_progress=lambda e: events.append(e.built()))
    ckpt = events[0].checkpoint
    with pytest.raises(ValueError, match="with 4 clients, not of fibecfed \\(fibecfed\\) with 3"):
        run_threads(config(rounds=2, clients=3), resume=ckpt)
    with pytest.raises(ValueError, match="checkpoint after 2 rounds holds results of another length"):
        run_threads(config(rounds=2), resume=dataclasses.replace(ckpt, round=2))
    bad = {k: (v[..., :1] if k.startswith("client/1/") else v) for k, v in ckpt.tensors.items()}
    with pytest.raises(ValueError, match="LoRA state of client 1 does not fit"):
        run_threads(config(rounds=2), resume=dataclasses.replace(ckpt, tensors=bad))
