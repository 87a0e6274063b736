"""iid_partition / dirichlet_partition: complete and disjoint, seeded, balanced vs skewed."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from fedcore.data import dirichlet_partition, iid_partition


def _assert_exact_cover(parts: list[list[int]], num_items: int) -> None:
    flat = [i for p in parts for i in p]
    assert sorted(flat) == list(range(num_items)), "an index is missing or repeated"
    assert all(isinstance(i, int) for i in flat)
    assert all(p == sorted(p) for p in parts)


def _max_label_share(parts: list[list[int]], labels: list) -> float:
    """Mean over clients of the largest fraction of one label in that client's shard."""
    return float(np.mean([max(Counter(labels[i] for i in p).values()) / len(p) for p in parts]))


@pytest.mark.parametrize("num_items,num_clients", [(1, 1), (10, 3), (101, 7), (64, 64)])
def test_iid_is_an_exact_balanced_cover(seed, num_items, num_clients):
    parts = iid_partition(num_items, num_clients, seed=seed)
    assert len(parts) == num_clients
    _assert_exact_cover(parts, num_items)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_iid_is_seeded(seed):
    assert iid_partition(200, 6, seed=seed) == iid_partition(200, 6, seed=seed)
    assert iid_partition(200, 6, seed=seed) != iid_partition(200, 6, seed=seed + 1)


@pytest.mark.parametrize("args", [(10, 0), (10, -1), (3, 4), (0, 1), (-1, 1), (10, 2.0)])
def test_iid_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        iid_partition(*args, seed=0)


@pytest.mark.parametrize("alpha", [0.05, 1.0, 100.0])
def test_dirichlet_is_an_exact_cover(seed, alpha):
    rng = np.random.default_rng(seed)
    labels = [str(x) for x in rng.integers(0, 6, size=300)]
    parts = dirichlet_partition(labels, 5, alpha=alpha, seed=seed, min_per_client=2)
    assert len(parts) == 5
    _assert_exact_cover(parts, len(labels))
    assert min(len(p) for p in parts) >= 2


def test_dirichlet_is_seeded(seed):
    labels = [i % 4 for i in range(200)]
    a = dirichlet_partition(labels, 5, alpha=0.5, seed=seed)
    assert a == dirichlet_partition(labels, 5, alpha=0.5, seed=seed)
    assert a != dirichlet_partition(labels, 5, alpha=0.5, seed=seed + 1)


def test_small_alpha_is_more_skewed_than_large_alpha(seed):
    labels = [i % 5 for i in range(500)]
    seeds = range(seed, seed + 10)

    def mean_share(alpha: float) -> float:
        shares = [_max_label_share(dirichlet_partition(labels, 4, alpha=alpha, seed=s), labels) for s in seeds]
        return float(np.mean(shares))

    skewed, near_iid = mean_share(0.05), mean_share(100.0)
    # IID shards have max share ~0.2 (5 balanced labels); alpha=0.05 shards are mostly one label
    assert near_iid < 0.3, near_iid
    assert skewed > 0.5, skewed
    # Near IID, every client holds every label.
    part = dirichlet_partition(labels, 4, alpha=100.0, seed=seed)
    assert all(set(labels[i] for i in p) == set(range(5)) for p in part)


def test_single_label_and_single_client(seed):
    assert dirichlet_partition(["x"] * 7, 1, alpha=1.0, seed=seed) == [list(range(7))]
    parts = dirichlet_partition(["x"] * 50, 3, alpha=10.0, seed=seed)
    _assert_exact_cover(parts, 50)


def test_dirichlet_gives_up_with_a_clear_error():
    labels = [i % 10 for i in range(20)]
    with pytest.raises(ValueError, match="raise alpha"):
        dirichlet_partition(labels, 20, alpha=0.01, seed=0, min_per_client=1, max_attempts=3)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_clients": 0}, "num_clients"),
        ({"num_clients": 11}, "only 10 items"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": -1.0}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"alpha": float("inf")}, "alpha"),
        ({"min_per_client": -1}, "min_per_client"),
        ({"min_per_client": 4}, "min_per_client=4"),
        ({"max_attempts": 0}, "max_attempts"),
    ],
)
def test_dirichlet_rejects_bad_arguments(kwargs, match):
    args = {"num_clients": 3, "alpha": 1.0, "seed": 0, **kwargs}
    num_clients = args.pop("num_clients")
    with pytest.raises(ValueError, match=match):
        dirichlet_partition([i % 2 for i in range(10)], num_clients, **args)
