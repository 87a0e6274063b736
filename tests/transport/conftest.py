"""Transport test fixtures: real sockets on random loopback ports, closed with a timeout."""

from __future__ import annotations

import contextlib

import pytest
from fedcore.transport import Client, EndpointOptions, Keypair, Server

FAST = dict(lease_s=3.0, heartbeat_ms=200, chunk_bytes=1 << 20)


@pytest.fixture
def server_keys() -> Keypair:
    return Keypair.generate()


@pytest.fixture
def client_keys() -> Keypair:
    return Keypair.generate()


@pytest.fixture
def endpoints():
    """Open endpoints through ``make(kind, ...)``; every one is closed at teardown."""
    opened = []

    def make(kind: str, *args, **kwargs):
        kwargs.setdefault("options", EndpointOptions(**FAST))
        endpoint = (Server if kind == "server" else Client)(*args, **kwargs)
        opened.append(endpoint)
        return endpoint

    yield make
    for endpoint in reversed(opened):
        with contextlib.suppress(Exception):
            endpoint.close(timeout=5)


@pytest.fixture
def pair(endpoints, server_keys, client_keys):
    """A CURVE server and one allowed client."""
    server = endpoints("server", "tcp://127.0.0.1:0", keys=server_keys, allow=[client_keys.public])
    client = endpoints("client", server.address, keys=client_keys, server_key=server_keys.public)
    return server, client
