"""A method added the way the README shows (examples/new_method/fedmean.py: one file, one
registration call) runs through the thread runner and the process runner."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from fedcore.algorithms import algorithms
from fedcore.config import TransportConfig
from fedcore.runtime import run_processes, run_threads
from fedcore.runtime.processes import load_plugin

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "new_method" / "fedmean.py"


@pytest.fixture(scope="module")
def fedmean():
    load_plugin(("fedmean_example", str(EXAMPLE)))
    import sys

    return sys.modules["fedmean_example"]


def test_the_example_method_runs_on_both_runners_and_is_right(fedmean):
    assert "fedmean" in algorithms()
    config = fedmean.FedMeanConfig(clients=3, rounds=2)
    in_threads = run_threads(config)
    in_processes = run_processes(dataclasses.replace(config, transport=TransportConfig(kind="zmq")))
    assert in_threads.report.losses == in_processes.report.losses
    # by hand: the sample-weighted mean of the clients' means is the mean of all their data
    data = [k + torch.randn(10 + k, 4, generator=torch.Generator().manual_seed(k)) for k in range(3)]
    expected = torch.cat(data).mean(0)
    assert torch.allclose(torch.tensor(in_threads.result), expected, atol=1e-6)
