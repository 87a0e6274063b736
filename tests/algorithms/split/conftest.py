"""Shared fixtures of the split tests."""

from __future__ import annotations

import pytest
from fedcore.transport import InProcessHub

from fedcore.algorithms.split.config import config_from_dict
from fedcore.algorithms.split.setup import build_split, server_parts
from fedcore.data import CharTokenizer

TINY = {
    "model": {"hidden_size": 32, "num_layers": 4},
    "lora": {"r": 4, "alpha": 8.0},
    "train": {"clients": 2, "rounds": 1, "local_steps": 1, "batch_size": 4},
}


@pytest.fixture
def make_server():
    """A factory: ``make_server(cls)`` -> (a server role of ``cls`` with a tiny body of hidden
    size 32, the InProcessHub endpoints of its clients "c0" and "c1")."""

    def make(cls):
        config = config_from_dict(TINY)
        parts = server_parts(config, build_split(config, CharTokenizer()))
        hub = InProcessHub()
        role = cls(hub.server(), parts, ["c0", "c1"], [1.0, 1.0], timeout=10)
        return role, hub.endpoint("c0"), hub.endpoint("c1")

    return make
