"""Tensors and numbers in and out of Flower records, and the checks a reply passes first.

A state is ``{name: tensor}`` (CPU). ``arrays_of`` / ``state_of`` convert to and from Flower's
``ArrayRecord`` (numpy underneath: fp32 stays fp32 bit for bit; bf16 is refused by numpy, so
fedcore's adapters and blocks travel in fp32 / fp64 as they are trained). ``reply_problem`` says why
a reply cannot be used (an error reply, a missing record, a non-finite number), in one line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import ArrayRecord, Message, MetricRecord

State = dict[str, torch.Tensor]

ARRAYS, METRICS, CONFIG = "arrays", "metrics", "config"  # the record keys Flower's strategies use


def arrays_of(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """An ``ArrayRecord`` of a state (names and order kept)."""
    return ArrayRecord({n: t.detach().cpu() for n, t in state.items()} if state else {})


def state_of(record: ArrayRecord) -> State:
    """The state of an ``ArrayRecord``: writable CPU tensors (copies)."""
    return {n: torch.from_numpy(np.array(a.numpy(), copy=True)) for n, a in record.items()}


def nbytes(record: ArrayRecord) -> int:
    """Payload bytes of an ``ArrayRecord``: its arrays' elements, without their serialized headers
    (as fedcore's byte counts)."""
    return sum(int(a.numpy().nbytes) for a in record.values())


def number(metrics: MetricRecord, key: str) -> float | None:
    """``metrics[key]`` as a finite float, None when it is missing or not one."""
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def as_int(value: object, what: str) -> int:
    """``value`` as an int (an int, or a float with an integral value); ``ValueError`` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return int(value)


def reply_problem(reply: Message, *, arrays: bool, need: tuple[str, ...]) -> str | None:
    """Why ``reply`` is unusable (None: it is fine): an error reply, no ``metrics`` record, a key of
    ``need`` missing or not a finite number, or (``arrays``) no ``arrays`` record."""
    if reply.has_error():
        return f"error reply: {reply.error.reason}"
    content = reply.content
    if METRICS not in content.metric_records:
        return "no 'metrics' MetricRecord in the reply"
    metrics = content.metric_records[METRICS]
    for key in need:
        if number(metrics, key) is None:
            return f"metrics[{key!r}] must be a finite number, got {metrics.get(key)!r}"
    if arrays and ARRAYS not in content.array_records:
        return "no 'arrays' ArrayRecord in the reply"
    return None


def sender(reply: Message) -> int:
    """The node id a reply came from."""
    return int(reply.metadata.src_node_id)
