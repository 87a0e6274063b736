"""Real processes: 8 concurrent clients, and a client killed mid-transfer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fedcore.transport import EndpointOptions, Keypair, PeerTimeout
from fedcore.transport.assembly import build_outgoing

PROC = str(Path(__file__).with_name("_proc.py"))


def _spawn(role: str, cfg: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, PROC, role, json.dumps(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONSAFEPATH="1"),
    )


def _kp(prefix: str, keys: Keypair) -> dict:
    return {f"{prefix}_public": keys.public.decode(), f"{prefix}_secret": keys.secret.decode()}


def test_one_server_eight_client_processes():
    server_keys = Keypair.generate()
    clients = [Keypair.generate() for _ in range(8)]
    server = _spawn("echo-server", {**_kp("server", server_keys), "allow": [k.public.decode() for k in clients]})
    try:
        address = server.stdout.readline().strip()
        assert address.startswith("tcp://127.0.0.1:"), server.stderr.read()
        procs = [
            _spawn(
                "client",
                {
                    **_kp("client", k),
                    "address": address,
                    "server_public": server_keys.public.decode(),
                    "seed": i,
                    "transfers": 5,
                    "numel": 300_000,
                },
            )
            for i, k in enumerate(clients)
        ]
        for p in procs:
            out, err = p.communicate(timeout=240)
            assert p.returncode == 0 and out.strip() == "ok", err[-2000:]
    finally:
        server.kill()
        server.wait(10)


def test_killed_client_gets_peer_timeout_while_others_continue(endpoints):
    server_keys, good, doomed = Keypair.generate(), Keypair.generate(), Keypair.generate()
    lease = 2.0
    server = endpoints(
        "server",
        "tcp://127.0.0.1:0",
        keys=server_keys,
        allow=[good.public, doomed.public],
        options=EndpointOptions(lease_s=lease, heartbeat_ms=200, chunk_bytes=1 << 20),
    )
    slow = _spawn(
        "slow-client",
        {
            **_kp("client", doomed),
            "address": server.address,
            "server_public": server_keys.public.decode(),
            "mbps": 4.0,
            "numel": 25_000_000,
        },
    )
    try:
        assert slow.stdout.readline().strip() == "sending"
        time.sleep(1.5)  # mid-transfer: ~6 of 100 MB are across
        os.kill(slow.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        other = endpoints("client", server.address, keys=good, server_key=server_keys.public)
        other.send({"x": torch.ones(4)}).wait(10)
        timed_out = None
        served = 0
        while time.monotonic() - killed_at < lease + 5:
            try:
                msg = server.recv(timeout=0.2)
                served += 1
                server.send(msg.peer, msg.tensors)
                other.recv(timeout=5)
                other.send({"x": torch.ones(4)})
            except PeerTimeout as err:
                if err.peer is not None:
                    timed_out = (err.peer, time.monotonic() - killed_at)
                    break
        assert timed_out is not None, "no PeerTimeout for the killed client"
        assert timed_out[0] == doomed.public.decode()
        assert timed_out[1] <= lease + 1.5
        assert served >= 1
        other.send({"after": torch.ones(1)}).wait(10)  # the others are still served
        names = set()
        while "after" not in names:
            names = set(server.recv(timeout=10).tensors)
    finally:
        slow.kill()
        slow.wait(10)


def test_duplicate_transfers_are_acknowledged_not_applied_twice(pair):
    server, client = pair
    handle = client.send({"x": torch.arange(3)}, step=1)
    handle.wait(10)
    server.recv(timeout=10)
    # a resend of the same (session, seq), as after a reconnect with the ack lost
    dup = build_outgoing(
        seq=handle.seq,
        session=client.session,
        step=1,
        kind="data",
        meta={},
        codec="raw",
        tensors={"x": torch.arange(3)},
        chunk_bytes=1 << 20,
        max_bytes=1 << 20,
    )
    client._commands.put(("send", "server", dup))
    client._wake()
    dup.handle.wait(10)  # acknowledged ...
    with pytest.raises(PeerTimeout):
        server.recv(timeout=0.5)  # ... but not delivered again
