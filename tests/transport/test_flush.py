"""``flush`` before ``close``: the last transfers queued reach the peer although ``close`` drops
unsent data (LINGER 0), as a run's final stop orders must."""

from __future__ import annotations

import time

import torch


def test_flush_then_close_delivers_the_last_transfers(pair):
    server, client = pair
    client.send({}, {"op": "hello"})
    peer = server.recv(timeout=10).peer
    big = torch.randn(3, 1 << 20, generator=torch.Generator().manual_seed(5))  # 12 MiB: several chunks
    server.send(peer, {"x": big}, {"op": "last-data"})
    server.send(peer, {}, {"op": "stop"}, tag="control")
    t0 = time.monotonic()
    assert server.flush(timeout=10.0)
    assert time.monotonic() - t0 < 10.0
    server.close(timeout=5)
    first, second = client.recv(timeout=10), client.recv(timeout=10)
    assert first.meta["op"] == "last-data" and torch.equal(first.tensors["x"], big)
    assert second.meta["op"] == "stop"
    assert server.flush(timeout=0.1)  # nothing left to confirm
