"""CURVE authentication: unknown keys refused, revocation bites at the next message, rotation."""

from __future__ import annotations

import time

import pytest
import torch
from fedcore.transport import AuthError, Keypair, PeerTimeout, allow, revoke, save_keypair
from fedcore.transport.keys import load_keypair


def test_unknown_client_key_is_refused(endpoints, server_keys, client_keys):
    server = endpoints("server", "tcp://127.0.0.1:0", keys=server_keys, allow=[client_keys.public])
    stranger = endpoints("client", server.address, keys=Keypair.generate(), server_key=server_keys.public)
    stranger.send({"x": torch.ones(1)})
    with pytest.raises(AuthError, match="rejected our key"):
        stranger.recv(timeout=10)
    with pytest.raises(PeerTimeout):
        server.recv(timeout=0.5)  # nothing of the stranger's got through
    friend = endpoints("client", server.address, keys=client_keys, server_key=server_keys.public)
    friend.send({"x": torch.ones(2)})
    assert torch.equal(server.recv(timeout=10).tensors["x"], torch.ones(2))


def test_wrong_server_key_fails_the_handshake(endpoints, server_keys, client_keys):
    server = endpoints("server", "tcp://127.0.0.1:0", keys=server_keys, allow=[client_keys.public])
    client = endpoints("client", server.address, keys=client_keys, server_key=Keypair.generate().public)
    client.send({"x": torch.ones(1)})
    with pytest.raises(PeerTimeout):  # an impostor server key never completes a handshake
        server.recv(timeout=1.0)


def test_revoked_key_is_refused_at_its_next_message(endpoints, server_keys, tmp_path):
    allow_dir = tmp_path / "allow"
    pub, secret = save_keypair(tmp_path, "alice")
    allow(allow_dir, pub)
    server = endpoints("server", "tcp://127.0.0.1:0", keys=server_keys, allow=allow_dir)
    alice = endpoints("client", server.address, keys=load_keypair(secret), server_key=server_keys.public)
    alice.send({"x": torch.ones(1)}).wait(10)
    assert server.recv(timeout=10).peer == load_keypair(pub).public.decode()

    revoke(allow_dir, "alice")
    time.sleep(0.5)  # the server re-reads its allow-list directory every 0.2 s
    alice.send({"x": torch.ones(1)})
    with pytest.raises(AuthError, match="no longer"):
        alice.recv(timeout=10)
    with pytest.raises(PeerTimeout):
        server.recv(timeout=0.5)
    assert any("no longer allowed" in reason for _, reason in server.errors)
    assert alice.stats()["received"].get("error", 0) > 0  # told, not just ignored


def test_key_rotation_overlap_window(endpoints, server_keys, client_keys):
    server = endpoints("server", "tcp://127.0.0.1:0", keys=server_keys, allow=[client_keys.public])
    moved = endpoints("client", server.address, keys=client_keys, server_key=server_keys.public)
    moved.send({"x": torch.ones(1)}).wait(10)
    server.recv(timeout=10)

    new_keys = Keypair.generate()
    new_address = server.rotate_keys(new_keys, "tcp://127.0.0.1:0", overlap_s=2.0)
    assert new_address != server.address
    time.sleep(0.5)
    # during the overlap: a client that only knows the old key and address still gets in ...
    late = endpoints("client", server.address, keys=client_keys, server_key=server_keys.public)
    late.send({"who": torch.tensor([1])}).wait(10)
    assert int(server.recv(timeout=10).tensors["who"]) == 1
    # ... and one configured with the new key on the new address too
    fresh = endpoints("client", new_address, keys=client_keys, server_key=new_keys.public)
    fresh.send({"who": torch.tensor([2])}).wait(10)
    assert int(server.recv(timeout=10).tensors["who"]) == 2
    # the connected client followed the rekey and keeps working after the old socket closed
    time.sleep(2.5)
    moved.send({"who": torch.tensor([3])}).wait(10)
    msg = server.recv(timeout=10)
    assert int(msg.tensors["who"]) == 3
    server.send(msg.peer, {"ok": torch.ones(1)}).wait(10)
    assert torch.equal(moved.recv(timeout=10).tensors["ok"], torch.ones(1))
    # after the overlap the old key and address are gone
    stale = endpoints("client", server.address, keys=client_keys, server_key=server_keys.public)
    stale.send({"who": torch.tensor([4])})
    with pytest.raises(PeerTimeout):
        server.recv(timeout=1.0)
