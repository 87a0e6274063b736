"""Split a dataset's item indices among federated clients: IID, or label-skewed by a Dirichlet.

Both return one list of item indices per client; together the lists hold every index in
``range(num_items)`` exactly once, each list in ascending order. Both are deterministic by ``seed``
(a ``numpy.random.Generator``), so every process of a federated job can compute its own shard.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np


def _check_clients(num_clients: int, num_items: int) -> None:
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
        raise ValueError(f"num_clients must be an int >= 1, got {num_clients!r}")
    if num_clients > num_items:
        raise ValueError(
            f"{num_clients} clients but only {num_items} items: every client needs at least one; "
            "use fewer clients or more data"
        )


def iid_partition(num_items: int, num_clients: int, *, seed: int) -> list[list[int]]:
    """Shuffle ``range(num_items)`` and cut it into ``num_clients`` near-equal shards.

    Shard sizes differ by at most one (the first ``num_items % num_clients`` shards get the extra
    item). Raises ``ValueError`` for ``num_clients < 1`` or ``num_clients > num_items``.
    """
    if isinstance(num_items, bool) or not isinstance(num_items, int) or num_items < 0:
        raise ValueError(f"num_items must be an int >= 0, got {num_items!r}")
    _check_clients(num_clients, num_items)
    order = np.random.default_rng(seed).permutation(num_items)
    return [sorted(int(i) for i in shard) for shard in np.array_split(order, num_clients)]


def dirichlet_partition(
    labels: Sequence[Hashable],
    num_clients: int,
    *,
    alpha: float,
    seed: int,
    min_per_client: int = 1,
    max_attempts: int = 100,
) -> list[list[int]]:
    """Label-skewed split of ``range(len(labels))`` (the scheme of Hsu et al. 2019, FedML, etc.).

    For each label, client shares ``p ~ Dirichlet(alpha * 1)`` are drawn and that label's shuffled
    indices are cut at ``floor(cumsum(p) * count)``. Small ``alpha`` (e.g. 0.05) gives each client
    few labels; large ``alpha`` (e.g. 100) approaches an IID split. The whole draw is repeated
    until every client holds at least ``min_per_client`` items, at most ``max_attempts`` times,
    then ``ValueError``. Labels only need to be hashable; they are visited in order of first
    appearance, so the result depends only on ``labels`` and the arguments.

    Raises ``ValueError`` for ``num_clients < 1``, more clients than items, ``alpha <= 0`` (or not
    finite), ``min_per_client < 0``, ``num_clients * min_per_client > len(labels)`` or
    ``max_attempts < 1``.
    """
    num_items = len(labels)
    _check_clients(num_clients, num_items)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0 (small = skewed, large = near IID), got {alpha}")
    if isinstance(min_per_client, bool) or not isinstance(min_per_client, int) or min_per_client < 0:
        raise ValueError(f"min_per_client must be an int >= 0, got {min_per_client!r}")
    if num_clients * min_per_client > num_items:
        raise ValueError(
            f"{num_clients} clients x min_per_client={min_per_client} exceeds {num_items} items; "
            "lower min_per_client or use fewer clients"
        )
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(f"max_attempts must be an int >= 1, got {max_attempts!r}")

    by_label: dict[Hashable, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    groups = [np.asarray(idx, dtype=np.int64) for idx in by_label.values()]

    rng = np.random.default_rng(seed)
    smallest = 0
    for _ in range(max_attempts):
        shards: list[list[int]] = [[] for _ in range(num_clients)]
        for idx in groups:
            shuffled = rng.permutation(idx)
            shares = rng.dirichlet(np.full(num_clients, float(alpha)))
            # cut points: (num_clients - 1,) int64, non-decreasing, in [0, len(idx)]
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(np.int64)
            for shard, part in zip(shards, np.split(shuffled, cuts), strict=True):
                shard.extend(int(i) for i in part)
        smallest = min(len(s) for s in shards)
        if smallest >= min_per_client:
            assert sum(len(s) for s in shards) == num_items
            return [sorted(s) for s in shards]
    raise ValueError(
        f"no Dirichlet(alpha={alpha}) draw in {max_attempts} attempts gave every one of "
        f"{num_clients} clients >= {min_per_client} items (last smallest: {smallest}); "
        "raise alpha, lower min_per_client, use fewer clients or raise max_attempts"
    )
