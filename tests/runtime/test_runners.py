"""Every registered algorithm through the thread runner and the process runner (CURVE on): the
same config gives bit-identical losses."""

from __future__ import annotations

import math

import pytest

from fedcore.algorithms import get_algorithm
from fedcore.runtime import run_processes, run_threads

from .conftest import TINY, with_transport


@pytest.mark.parametrize("name", sorted(TINY))
def test_threads_and_processes_give_bit_identical_losses(name):
    spec = get_algorithm(name)
    in_threads = run_threads(spec.config_from_dict(with_transport(TINY[name], kind="inprocess")))
    in_processes = run_processes(spec.config_from_dict(with_transport(TINY[name], kind="zmq", curve=True)))
    assert in_threads.algorithm == in_processes.algorithm == name
    assert in_processes.transport == "zmq+curve" and in_threads.transport == "inprocess"
    assert in_threads.report.losses and all(math.isfinite(x) for x in in_threads.report.losses)
    assert in_threads.report.losses == in_processes.report.losses  # bit for bit
    assert sum(in_processes.wire["received"].values()) > 0  # what crossed the sockets was counted
