"""Overlapped send/receive: the CPU path everywhere, the CUDA staging path where there is a GPU."""

from __future__ import annotations

import pytest
import torch
from fedcore.transport.overlap import OverlappedReceiver, OverlappedSender


def test_cpu_path_sends_and_receives(pair):
    server, client = pair
    sender, receiver = OverlappedSender(client), OverlappedReceiver(server, "cpu")
    try:
        gen = torch.Generator().manual_seed(4)
        sent = [torch.randn(1000 + i, generator=gen) for i in range(5)]
        futures = [sender.send({"x": t}, {"i": i}, step=i) for i, t in enumerate(sent)]
        for f in futures:
            f.result(timeout=10).wait(10)
        for i, t in enumerate(sent):
            msg, tensors = receiver.recv(timeout=10)
            assert msg.meta == {"i": i} and torch.equal(tensors["x"], t)
    finally:
        sender.close()
        receiver.close()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_staging_round_trip(pair):
    server, client = pair
    sender, receiver = OverlappedSender(client, slots=2), OverlappedReceiver(server, "cuda")
    try:
        sent = [torch.randn(1 << 20, device="cuda") * i for i in range(6)]
        futures = [sender.send({"h": t}, step=i) for i, t in enumerate(sent)]
        for f in futures:
            f.result(timeout=30)
        for t in sent:
            _, tensors = receiver.recv(timeout=30)
            assert tensors["h"].is_cuda and torch.equal(tensors["h"], t)
    finally:
        sender.close()
        receiver.close()
