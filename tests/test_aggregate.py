"""weighted_average (FedAvg) against a hand-written weighted sum."""

from __future__ import annotations

import pytest
import torch

from fedcore.aggregate import mismatch, weighted_average


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


def test_mismatch_names_what_keeps_an_upload_out_of_the_average():
    gen = torch.Generator().manual_seed(3)
    ref = {"a": torch.randn(2, 3, generator=gen), "b": torch.randn(4, generator=gen)}
    assert mismatch({k: v + 1 for k, v in ref.items()}, ref) is None
    assert mismatch({"a": ref["a"]}, ref) == "names differ: missing ['b'], unexpected []"
    assert mismatch({"a": ref["a"].T, "b": ref["b"]}, ref) == "a: shape (3, 2), expected (2, 3)"
    assert mismatch({"a": ref["a"].double(), "b": ref["b"]}, ref) == "a: dtype torch.float64, expected torch.float32"
    bad = ref["b"].clone()
    bad[1] = float("inf")
    assert mismatch({"a": ref["a"], "b": bad}, ref) == "b: not a finite floating tensor"
    assert mismatch({"a": torch.ones(2, dtype=torch.int64)}) == "a: not a finite floating tensor"  # no reference
    assert mismatch({}) == "an empty upload"
