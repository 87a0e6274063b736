"""ParaBlock vs FedBCD on deterministic quadratics, over an in-process (zero-cost) link.

The two differ only by the one-round staleness: ParaBlock's client i trains round t's block
from theta_t + eta * Delta_{t-1}^i (its own update, not yet aggregated), where FedBCD starts
from theta_t + eta * Delta_{t-1}. Both recursions are written out here by hand (numpy float64)
and must match the runtime to rounding. The exact relationship: local GD on a quadratic is
affine in its start point, so when every client has the same Hessian A (f_i = 1/2 (x - c_i)^T A
(x - c_i)) and equal weights, the mean of the clients' stale starts is FedBCD's start and
ParaBlock's aggregates, hence its global model, equal FedBCD's exactly; each client's local
model is then FedBCD's model plus eta * (Delta_t^i - Delta_t) on block b_t. With client-specific
Hessians the staleness term no longer averages out and the methods differ.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedcore.algorithms.bcd import BCDConfig, BlockClient, BlockSchedule, QuadraticBlockTrainer, run_inprocess
from fedcore.algorithms.bcd.local import add_scaled_
from fedcore.algorithms.bcd.runner import make_client

SIZES = [3, 2, 4, 1]
CLIENTS, ROUNDS, K, GAMMA, ETA = 3, 7, 3, 0.1, 0.8


def problem(shared_hessian: bool, seed: int = 0):
    """(A_i per client, c_i per client, x0): SPD A_i, one shared or one per client."""
    rng = np.random.default_rng(seed)
    n = sum(SIZES)

    def spd():
        m = rng.standard_normal((n, n))
        return m @ m.T / n + np.eye(n)

    shared = spd()
    hessians = [shared if shared_hessian else spd() for _ in range(CLIENTS)]
    cs = [rng.standard_normal(n) for _ in range(CLIENTS)]
    return hessians, cs, rng.standard_normal(n)


def delta_block(a, c, x, block):
    lo = sum(SIZES[:block])
    hi = lo + SIZES[block]
    y = x.copy()
    for _ in range(K):
        y[lo:hi] -= GAMMA * (a @ (y - c))[lo:hi]
    return lo, hi, y[lo:hi] - x[lo:hi]


def fedbcd_by_hand(hessians, cs, x0, blocks):
    """theta[b_t] += eta * mean_i Delta_t^i, every client starting from theta."""
    theta = x0.copy()
    for b in blocks:
        parts = [delta_block(a, c, theta, b) for a, c in zip(hessians, cs, strict=True)]
        lo, hi = parts[0][0], parts[0][1]
        theta[lo:hi] += ETA * np.mean([d for _, _, d in parts], axis=0)
    return theta


def parablock_by_hand(hessians, cs, x0, blocks):
    """Algorithm 2: own update at once, the aggregate one round later with the correction."""
    theta = x0.copy()
    local = [x0.copy() for _ in cs]
    own_prev = None  # (lo, hi, [Delta_{t-1}^i])
    for b in blocks:
        own = [delta_block(a, c, x, b) for a, c, x in zip(hessians, cs, local, strict=True)]  # stale start
        for x, (lo, hi, d) in zip(local, own, strict=True):
            x[lo:hi] += ETA * d
        if own_prev is not None:  # the aggregate of the previous round, and each client's correction
            lo, hi, ds = own_prev
            agg = np.mean(ds, axis=0)
            theta[lo:hi] += ETA * agg
            for x, d in zip(local, ds, strict=True):
                x[lo:hi] += ETA * (agg - d)
        own_prev = (own[0][0], own[0][1], [d for _, _, d in own])
    lo, hi, ds = own_prev  # the final sync
    agg = np.mean(ds, axis=0)
    theta[lo:hi] += ETA * agg
    for x, d in zip(local, ds, strict=True):
        x[lo:hi] += ETA * (agg - d)
    return theta, local


def run_runtime(method: str, hessians, cs, x0, schedule: str, seed: int = 0, history=None):
    config = BCDConfig(
        method=method, clients=CLIENTS, rounds=ROUNDS, eta=ETA, schedule=schedule, seed=seed, round_timeout_s=30.0
    )
    t = torch.from_numpy
    trainers = [
        QuadraticBlockTrainer(t(a), t(c), t(x0), SIZES, steps=K, gamma=GAMMA) for a, c in zip(hessians, cs, strict=True)
    ]
    params = {k: v.clone() for k, v in trainers[0].params.items()}
    run_inprocess(config, trainers, params, trainers[0].blocks, history=history)
    theta = torch.cat([params[f"x{b}"] for b in range(len(SIZES))]).numpy()
    return theta, [tr.vector().numpy() for tr in trainers]


@pytest.mark.parametrize("shared_hessian", [True, False])
@pytest.mark.parametrize("schedule", ["random", "sequential", "reverse"])
def test_runtime_matches_both_recursions_by_hand(schedule, shared_hessian):
    hessians, cs, x0 = problem(shared_hessian)
    plan = BlockSchedule(schedule, len(SIZES), seed=0)
    blocks = [plan.block(t) for t in range(ROUNDS)]
    para, para_locals = run_runtime("parablock", hessians, cs, x0, schedule)
    want, want_locals = parablock_by_hand(hessians, cs, x0, blocks)
    np.testing.assert_allclose(para, want, rtol=0, atol=1e-12)
    for got, exp in zip(para_locals, want_locals, strict=True):
        np.testing.assert_allclose(got, exp, rtol=0, atol=1e-12)
        np.testing.assert_allclose(got, para, rtol=0, atol=1e-12)  # after the sync: the global model
    bcd, _ = run_runtime("fedbcd", hessians, cs, x0, schedule)
    np.testing.assert_allclose(bcd, fedbcd_by_hand(hessians, cs, x0, blocks), rtol=0, atol=1e-12)
    if shared_hessian:  # the staleness averages out of the aggregate: the same global model
        np.testing.assert_allclose(para, bcd, rtol=0, atol=1e-12)
    else:  # it does not: the methods really differ
        assert np.abs(para - bcd).max() > 1e-4


def test_shared_hessian_same_global_model_every_round_locals_ahead_by_own_minus_mean():
    """Round by round: ParaBlock's server model after aggregate v equals FedBCD's after v, and
    client i's local model after round t is that plus eta * (Delta_t^i - Delta_t) on b_t."""
    hessians, cs, x0 = problem(shared_hessian=True)
    para_hist: dict = {}
    bcd_hist: dict = {}
    run_runtime("parablock", hessians, cs, x0, "random", history=para_hist)
    run_runtime("fedbcd", hessians, cs, x0, "random", history=bcd_hist)
    assert sorted(para_hist) == sorted(bcd_hist) == list(range(ROUNDS + 1))
    for v in bcd_hist:
        for name in bcd_hist[v]:
            torch.testing.assert_close(para_hist[v][name], bcd_hist[v][name], rtol=0, atol=1e-12)
    # the local models after round t = 2 (before any sync): theta_3(FedBCD) + eta (Delta_2^i - Delta_2)
    # on b_2 only, so their mean is FedBCD's model
    plan = BlockSchedule("random", len(SIZES), seed=0)
    blocks = [plan.block(t) for t in range(3)]
    _, locals_ = parablock_by_hand_prefix(hessians, cs, x0, blocks)
    theta3 = fedbcd_by_hand(hessians, cs, x0, blocks)
    np.testing.assert_allclose(np.mean(locals_, axis=0), theta3, rtol=0, atol=1e-12)
    lo = sum(SIZES[: blocks[2]])
    hi = lo + SIZES[blocks[2]]
    for x in locals_:
        off = x - theta3
        assert np.abs(off[lo:hi]).max() > 1e-6
        np.testing.assert_allclose(np.delete(off, np.s_[lo:hi]), 0.0, rtol=0, atol=1e-12)


def parablock_by_hand_prefix(hessians, cs, x0, blocks):
    """ParaBlock's local models after round len(blocks) - 1, before any sync."""
    theta = x0.copy()
    local = [x0.copy() for _ in cs]
    prev = None
    for b in blocks:
        own = [delta_block(a, c, x, b) for a, c, x in zip(hessians, cs, local, strict=True)]
        for x, (lo, hi, d) in zip(local, own, strict=True):
            x[lo:hi] += ETA * d
        if prev is not None:
            lo, hi, ds = prev
            agg = np.mean(ds, axis=0)
            theta[lo:hi] += ETA * agg
            for x, d in zip(local, ds, strict=True):
                x[lo:hi] += ETA * (agg - d)
        prev = (own[0][0], own[0][1], [d for _, _, d in own])
    return theta, local


def test_a_client_without_the_correction_breaks_the_invariant():
    """The check can fail: drop the correction step and the local model drifts off."""

    class NoCorrection(BlockClient):  # applies its own update only: theta[b_t] += eta * Delta_t^i
        def rebuild(self, *touched):
            own = self.pending.get(self.last_round)
            if own is not None and any(own[1] is d for d in touched):
                add_scaled_(self.trainer.params, own[1], self.eta)

    hessians, cs, x0 = problem(shared_hessian=False)
    config = BCDConfig(method="parablock", clients=CLIENTS, rounds=ROUNDS, eta=ETA, round_timeout_s=30.0)
    t = torch.from_numpy
    trainers = [
        QuadraticBlockTrainer(t(a), t(c), t(x0), SIZES, steps=K, gamma=GAMMA) for a, c in zip(hessians, cs, strict=True)
    ]
    params = {k: v.clone() for k, v in trainers[0].params.items()}

    def factory(config, link, trainer, index, **kw):
        if index == 0:
            kw.pop("on_round", None)
            return NoCorrection(link, trainer, index=index, eta=ETA, staleness=1, **kw)
        return make_client(config, link, trainer, index, **kw)

    run_inprocess(config, trainers, params, trainers[0].blocks, client_factory=factory)
    theta = torch.cat([params[f"x{b}"] for b in range(len(SIZES))])
    assert (trainers[0].vector() - theta).abs().max() > 1e-3
    torch.testing.assert_close(trainers[1].vector(), theta, rtol=0, atol=1e-12)
