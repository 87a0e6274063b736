"""The attacks have teeth (embedding-only h_A without noise is read back whole) and noise blunts
them in order."""

from __future__ import annotations

import pytest
import torch

from fedcore.privacy import (
    HiddenSample,
    LinearInverter,
    NearestRow,
    RidgeInverter,
    TransformerInverter,
    WeightMatch,
    token_recovery,
)

from .conftest import samples, tiny_config


def _attacks(head):
    ridge = RidgeInverter()
    return {
        "nearest": NearestRow(head.embed.weight),
        "least squares": NearestRow(head.embed.weight, fit_map=True),
        "ridge": ridge,
        "linear": LinearInverter(epochs=20),
        "transformer": TransformerInverter(width=64, epochs=40),
        "weights": WeightMatch(head, ridge, top_k=4),
    }


def test_every_attack_reads_an_embedding_only_h_a_back(embedding_only):
    head, shadow, victim = embedding_only
    for name, attack in _attacks(head).items():
        got = token_recovery(attack.fit(shadow).predict(victim), victim)
        assert got >= 0.97, (name, got)


def test_recovery_falls_monotonically_as_sigma_grows():
    """One client block, absolute noise on a fixed seed: each step up in sigma reads fewer tokens."""
    for attack in (RidgeInverter, lambda: LinearInverter(epochs=10)):
        recovered = []
        for sigma in (0.0, 0.3, 1.0, 3.0):
            _, shadow, victim = samples(tiny_config(1, std=sigma), shadow_examples=64)
            recovered.append(token_recovery(attack().fit(shadow).predict(victim), victim))
        assert all(a > b for a, b in zip(recovered, recovered[1:], strict=False)), recovered
        assert recovered[0] > 0.5 and recovered[-1] < 0.5 * recovered[0], recovered


def test_an_inverter_predicts_only_what_it_saw_and_checks_shapes():
    ids = torch.tensor([[5, 6, 0]])
    mask = torch.tensor([[True, True, False]])
    hidden = torch.nn.functional.one_hot(ids, 8).float()
    sample = HiddenSample(ids, hidden, mask)
    got = RidgeInverter().fit(sample).predict(sample)
    assert got[0, :2].tolist() == [5, 6] and set(got.flatten().tolist()) <= {5, 6}
    with pytest.raises(ValueError, match="must share"):
        HiddenSample(ids, hidden[:, :2], mask)
    with pytest.raises(ValueError, match="do not match"):
        token_recovery(got[:, :2], sample)
