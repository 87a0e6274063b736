"""optimizer_state / load_optimizer_state: AdamW and its LR schedule leave as tensors plus JSON
and come back bit for bit (the next steps equal the uninterrupted ones); a state of other
parameters is refused before anything changes."""

from __future__ import annotations

import json

import pytest
import torch

from fedcore.algorithms.training_state import load_optimizer_state, optimizer_state


def make(seed: int = 0):
    torch.manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    return params, opt, sched


def steps(params, opt, sched, n: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
        sched.step()


def test_round_trip_continues_bit_for_bit():
    params, opt, sched = make()
    steps(params, opt, sched, 3, seed=1)
    tensors, info = optimizer_state(opt, sched)
    info = json.loads(json.dumps(info))  # as a checkpoint stores it
    other_params, other_opt, other_sched = make(seed=5)
    with torch.no_grad():
        for mine, theirs in zip(other_params, params, strict=True):
            mine.copy_(theirs)
    load_optimizer_state(other_opt, tensors, info, other_sched)
    steps(params, opt, sched, 4, seed=2)
    steps(other_params, other_opt, other_sched, 4, seed=2)
    for a, b in zip(params, other_params, strict=True):
        assert torch.equal(a, b)
    assert sched.get_last_lr() == other_sched.get_last_lr()


def test_a_state_of_other_parameters_is_refused():
    params, opt, sched = make()
    steps(params, opt, sched, 1, seed=1)
    tensors, info = optimizer_state(opt, sched)
    small = torch.optim.AdamW([torch.nn.Parameter(torch.randn(5, 3))], lr=1e-3)
    with pytest.raises(ValueError, match="other parameters"):
        load_optimizer_state(small, tensors, info)
    bad = {**tensors, "opt.0.exp_avg": torch.zeros(2, 2)}
    _, fresh, _ = make()
    with pytest.raises(ValueError, match="has shape"):
        load_optimizer_state(fresh, bad, info)
    assert fresh.state_dict()["state"] == {}  # refused before anything changed
