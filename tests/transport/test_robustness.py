"""Regressions from review: buffers are not reused early, stalled transfers are aborted."""

from __future__ import annotations

import time

import msgpack
import torch
import zmq
from fedcore.transport import EndpointOptions, PeerTimeout


def test_sent_means_the_buffers_may_be_reused(endpoints):
    # A raw ROUTER that does not read for a while: libzmq on the client side still holds the frames.
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.RCVHWM, 1)
    router.setsockopt(zmq.RCVBUF, 64 * 1024)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    try:
        client = endpoints(
            "client",
            f"tcp://127.0.0.1:{port}",
            plaintext=True,
            options=EndpointOptions(chunk_bytes=8 << 20, lease_s=30.0),
        )
        big = torch.randint(0, 256, (4 << 20,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        original = big.clone()
        # the last frame is tiny: pyzmq's own tracker would cover only that one
        handle = client.send({"big": big, "tiny": torch.ones(2)})
        released = handle.sent.wait(0.5)
        if released:
            big.zero_()  # allowed once "sent" is set
        frames = router.recv_multipart()  # [route, header, big, padding, tiny]
        assert not released or bytes(frames[2]) == original.numpy().tobytes()
        assert handle.sent.wait(30)
    finally:
        router.close(0)
        ctx.term()


def test_a_stalled_transfer_is_aborted_and_frees_its_budget(endpoints):
    lease = 1.5
    options = EndpointOptions(
        lease_s=lease,
        heartbeat_ms=200,
        chunk_bytes=1 << 20,
        max_transfer_bytes=4 << 20,
        max_inflight_bytes=4 << 20,
        ban_s=30.0,
    )
    server = endpoints("server", "tcp://127.0.0.1:0", plaintext=True, options=options)
    ctx = zmq.Context()
    staller = ctx.socket(zmq.DEALER)
    staller.setsockopt(zmq.LINGER, 0)
    staller.connect(server.address)
    try:
        header = {
            "v": 1,
            "kind": "data",
            "tag": "x",
            "rs": False,
            "session": "s",
            "step": 0,
            "seq": 1,
            "codec": "raw",
            "meta": {},
            "tensors": [["x", "uint8", [4 << 20], 0, 4 << 20, "raw", None]],
            "total": 4 << 20,
            "chunks": 4,
            "off": 0,
            "n": 0,
        }
        staller.send(msgpack.packb(header))  # claims 4 MiB, sends none of it
        deadline = time.monotonic() + lease + 3
        while time.monotonic() < deadline and not any("stalled" in r for _, r in server.errors):
            staller.send(msgpack.packb({"v": 1, "kind": "ping"}))  # alive, but never finishing
            time.sleep(0.2)
        assert any("stalled" in r for _, r in server.errors)
        honest = endpoints("client", server.address, plaintext=True, options=options)
        payload = torch.arange(3 << 20, dtype=torch.uint8)
        honest.send({"x": payload}).wait(10)  # the budget the staller held is free again
        assert torch.equal(server.recv(timeout=10).tensors["x"], payload)
        try:
            server.recv(timeout=0.2)
        except PeerTimeout:
            pass
    finally:
        staller.close(0)
        ctx.term()
