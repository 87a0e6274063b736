"""weighted_average (FedAvg) against a hand-written weighted sum."""

from __future__ import annotations

import pytest
import torch

from fedcore.aggregate import weighted_average


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_weighted_average(dtype):
    gen = torch.Generator().manual_seed(5)
    states = [
        {"a": torch.randn(3, 7, generator=gen).to(dtype), "b": torch.randn(5, generator=gen).to(dtype)}
        for _ in range(3)
    ]
    weights = [1.0, 2.0, 5.0]
    out = weighted_average(states, weights)
    for key in ("a", "b"):
        expected = sum(s[key].double() * w for s, w in zip(states, weights, strict=False)) / 8.0
        assert out[key].dtype == dtype
        tol = 1e-12 if dtype == torch.float64 else (1e-6 if dtype == torch.float32 else 1e-2)
        torch.testing.assert_close(out[key].double(), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize(
    "states,weights,match",
    [
        ([], [], "at least one"),
        ([{"a": torch.ones(1)}], [1.0, 2.0], "weights for"),
        ([{"a": torch.ones(1)}, {"b": torch.ones(1)}], [1.0, 1.0], "keys"),
        ([{"a": torch.ones(1)}], [0.0], "positive sum"),
        ([{"a": torch.ones(1)}, {"a": torch.ones(1)}], [2.0, -1.0], ">= 0"),
    ],
)
def test_weighted_average_rejects_bad_input(states, weights, match):
    with pytest.raises(ValueError, match=match):
        weighted_average(states, weights)
