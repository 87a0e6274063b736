"""InProcessHub: the Link semantics in one process (copies, codecs, accounting)."""

from __future__ import annotations

import pytest
import torch
from fedcore.transport import InProcessHub, PeerTimeout, TransportError


def test_in_process_link_copies_and_counts():
    hub = InProcessHub()
    server, client = hub.server(), hub.endpoint("c0")
    x = torch.randn(4, 5)
    client.send({"x": x}, {"k": 1}, tag="h_A")
    msg = server.recv(timeout=1)
    assert msg.peer == "c0" and msg.kind == "h_A" and msg.meta == {"k": 1}
    assert torch.equal(msg.tensors["x"], x)
    x.add_(1)  # the receiver never shares memory with the sender
    assert not torch.equal(msg.tensors["x"], x)
    assert client.stats()["sent"] == {"h_A": 80} and server.stats()["received"] == {"h_A": 80}
    server.send_to("c0", {"y": torch.ones(2, dtype=torch.float64)}, codec="fp16")
    back = client.recv(timeout=1)
    assert back.tensors["y"].dtype == torch.float64 and server.stats()["sent"] == {"data": 4}


def test_in_process_errors():
    hub = InProcessHub()
    server = hub.server()
    with pytest.raises(TransportError):
        server.send_to("nobody", {})
    with pytest.raises(PeerTimeout):
        server.recv(timeout=0.05)
    with pytest.raises(ValueError):
        hub.endpoint("server")
