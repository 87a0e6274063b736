"""ParaBlock's correction (Eq. 3-4), checked in every client after every round of a real run:
local model == the server's global model through the aggregates the client applied + eta * the
client's own updates not yet aggregated, bit for bit (the client rebuilds its model from its copy
of the global model, which gets the server's own additions)."""

from __future__ import annotations

import pytest
import torch

from fedcore.algorithms.bcd import BCDConfig, BlockSchedule, expected_local, run_bcd, tiny_bcd_config

ROUNDS = 10


def tiny_config(**overrides) -> BCDConfig:
    base = dict(method="parablock", rounds=ROUNDS, eta=0.7, dtype="float64", seed=3)
    return tiny_bcd_config(**{**base, **overrides})


def _run_checked(config: BCDConfig) -> tuple[list[float], list[int]]:
    history: dict = {}
    errors: list[float] = []
    seen: list[int] = []

    def check(client, t: int) -> None:
        reference = history[client.next_agg]  # the global model through the aggregates applied
        want = expected_local(reference, client.pending, config.eta)
        err = max(float((client.trainer.params[n] - want[n]).abs().max()) for n in want)
        errors.append(err)
        seen.append(t)
        if client.pending:  # the own updates: ahead of the global model on exactly those blocks
            assert set(client.pending) == set(range(t - len(client.pending) + 1, t + 1)) or t == ROUNDS

    result = run_bcd(config, on_round=check, history=history)
    assert not result.dropped
    assert len(errors) == config.clients * (ROUNDS + 1)  # every round plus the final sync
    # after the sync every client holds exactly the global model
    return errors, seen


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_invariant_every_round_one_round_stale(mode):
    config = tiny_config(mode=mode)
    plan = BlockSchedule("random", config.num_blocks, seed=config.seed)
    blocks = [plan.block(t) for t in range(ROUNDS)]
    repeats = [a == b for a, b in zip(blocks, blocks[1:], strict=False)]
    assert any(repeats), "this seed must pick some block twice in a row"
    errors, _ = _run_checked(config)
    assert max(errors) == 0.0, max(errors)


def test_invariant_two_round_staleness():
    errors, _ = _run_checked(tiny_config(staleness=2, mode="full", seed=5))
    assert max(errors) == 0.0, max(errors)


def test_local_differs_from_global_only_on_the_own_block():
    """One-round staleness: between rounds the client is ahead on b_t only (by eta * Delta_t^i),
    and bitwise equal to the global model elsewhere."""
    config = tiny_config(rounds=4)
    history: dict = {}
    ahead: list[tuple[int, set[str], set[str]]] = []

    def check(client, t: int) -> None:
        if t >= config.rounds:
            return
        ref = history[client.next_agg]
        differ = {n for n in ref if not torch.equal(ref[n], client.trainer.params[n])}
        block, _ = client.pending[t]
        ahead.append((t, differ, set(client.trainer.blocks[block])))

    run_bcd(config, on_round=check, history=history)
    for _, differ, own in ahead:
        assert differ <= own and differ  # only the trained block is ahead; training moved it


def test_sync_leaves_every_client_on_the_global_model():
    clients: list = []
    result = run_bcd(tiny_config(rounds=3), clients=clients)
    for c in clients:
        for n, p in result.final_params.items():
            assert torch.equal(c.trainer.params[n], p), n


def test_invariant_with_partial_participation_and_the_gradient_schedule():
    """Half the clients per round (the others receive the aggregate and correct nothing of their
    own), blocks chosen by the clients' reported gradient norms."""
    config = tiny_config(clients=4, participation=0.5, schedule="gradient", seed=7, rounds=6)
    history: dict = {}
    errors: list[float] = []
    trained: dict[int, set[int]] = {}

    def check(client, t: int) -> None:
        want = expected_local(history[client.next_agg], client.pending, config.eta)
        errors.append(max(float((client.trainer.params[n] - want[n]).abs().max()) for n in want))
        trained.setdefault(client.index, set()).update(client.pending)

    result = run_bcd(config, on_round=check, history=history)
    assert all(len(r.participants) == 2 for r in result.records)
    assert all(sorted(r.included) == r.participants for r in result.records)
    assert max(errors) == 0.0
    assert len({r.block for r in result.records}) > 1  # the scores moved the choice around
