"""Link shaping: the token bucket alone, and a 50 MB/s link measured over a 200 MB transfer."""

from __future__ import annotations

import time

import pytest
import torch
from fedcore.transport import EndpointOptions, LinkShape, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_long_run_rate_and_latency():
    clock = FakeClock()
    bucket = TokenBucket(LinkShape(mbps=10.0, latency_ms=5.0, burst_bytes=1000), clock=clock)
    sent, start = 0, clock.t
    while sent < 50_000_000:
        ready = bucket.ready_at(clock.t)
        assert ready >= clock.t + 0.005 - 1e-12  # latency is always paid
        clock.t = ready
        bucket.consume(1_000_000)
        sent += 1_000_000
    elapsed = clock.t - start
    # the first MB rides the burst; latency overlaps the bandwidth wait (a delay, not a rate cut)
    assert elapsed == pytest.approx(49_000_000 / 10e6 + 0.005, rel=0.01)


def test_token_bucket_paces_each_chunk_by_its_serialization_delay():
    """With a 1 KB burst, a 100 KB chunk leaves 99 KB / rate after an idle spell and every later
    one 100 KB / rate after the previous: it arrives when the link would have carried it."""
    clock = FakeClock()
    bucket = TokenBucket(LinkShape(mbps=10.0, burst_bytes=1000), clock=clock)
    clock.t += 5.0  # idle: the bucket holds only its 1 KB burst
    start, times = clock.t, []
    for _ in range(5):
        ready = bucket.ready_at(start, 100_000)
        clock.t = ready - 1e-4
        assert bucket.ready_at(start, 100_000) == pytest.approx(ready)  # asking again does not move it
        clock.t = ready
        bucket.consume(100_000)
        times.append(ready - start)
    assert times == pytest.approx([0.0099 + 0.01 * i for i in range(5)], abs=1e-9)


def test_one_small_message_on_a_shaped_link_arrives_after_its_serialization_delay(endpoints):
    """A 500 KB message is one chunk: at 10 MB/s with a 1 KB burst it takes about 50 ms."""
    options = EndpointOptions(lease_s=10.0, link=LinkShape(mbps=10.0, burst_bytes=1024))
    server = endpoints("server", "tcp://127.0.0.1:0", plaintext=True)
    client = endpoints("client", server.address, plaintext=True, options=options)
    client.send({"warm": torch.zeros(1)})
    server.recv(timeout=10)
    time.sleep(0.5)  # idle: the bucket refills to its burst only
    t0 = time.monotonic()
    client.send({"x": torch.zeros(500_000, dtype=torch.uint8)})
    server.recv(timeout=10)
    assert time.monotonic() - t0 >= 0.045


def test_link_shape_validation():
    with pytest.raises(ValueError):
        LinkShape(mbps=0)
    with pytest.raises(ValueError):
        LinkShape(latency_ms=-1)


def test_shaped_link_50_mbps_over_200_mb(endpoints):
    shape = LinkShape(mbps=50.0)
    options = EndpointOptions(chunk_bytes=4 << 20, lease_s=10.0, link=shape)
    server = endpoints("server", "tcp://127.0.0.1:0", plaintext=True, options=EndpointOptions(chunk_bytes=4 << 20))
    client = endpoints("client", server.address, plaintext=True, options=options)
    client.send({"warm": torch.zeros(1)})
    server.recv(timeout=10)
    payload = torch.zeros(200_000_000, dtype=torch.uint8)
    t0 = time.monotonic()
    client.send({"x": payload})
    msg = server.recv(timeout=30)
    elapsed = time.monotonic() - t0
    assert msg.tensors["x"].numel() == 200_000_000
    rate = 200.0 / elapsed
    assert 45.0 <= rate <= 55.0, f"measured {rate:.1f} MB/s on a 50 MB/s link ({elapsed:.2f} s)"
