"""Peers run as separate processes by the transport tests: ``python _proc.py ROLE JSON``.

Roles: ``echo-server`` (prints its address, echoes every message back, prints its RSS in kB on
request), ``client`` (sends transfers, checks the echoes, exits 0), ``slow-client`` (starts one
large paced transfer and is killed by the test mid-way).
"""

from __future__ import annotations

import json
import sys
import time

import torch
from fedcore.transport import Client, EndpointOptions, Keypair, LinkShape, PeerTimeout, Server


def _keys(d: dict, prefix: str) -> Keypair:
    return Keypair(
        d[f"{prefix}_public"].encode(), d[f"{prefix}_secret"].encode() if d.get(f"{prefix}_secret") else None
    )


def echo_server(cfg: dict) -> None:
    options = EndpointOptions(
        lease_s=cfg.get("lease_s", 5.0),
        heartbeat_ms=200,
        ban_s=cfg.get("ban_s", 60.0),
        chunk_bytes=1 << 20,
        max_transfer_bytes=cfg.get("max_transfer_bytes", 1 << 30),
    )
    server = Server(
        "tcp://127.0.0.1:0", keys=_keys(cfg, "server"), allow=[k.encode() for k in cfg["allow"]], options=options
    )
    print(server.address, flush=True)
    while True:
        try:
            msg = server.recv(timeout=1.0)
        except PeerTimeout:
            continue
        if msg.meta.get("cmd") == "rss":
            rss = int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmRSS")))
            server.send(msg.peer, {}, {"rss_kb": rss, "refused": len(server.errors)})
        elif msg.meta.get("cmd") == "stop":
            break
        else:
            server.send(msg.peer, msg.tensors, {"echo": msg.seq, **msg.meta})
    server.close()


def client(cfg: dict) -> None:
    c = Client(
        cfg["address"],
        keys=_keys(cfg, "client"),
        server_key=cfg["server_public"].encode(),
        options=EndpointOptions(lease_s=10.0, chunk_bytes=1 << 20),
    )
    gen = torch.Generator().manual_seed(cfg["seed"])
    for i in range(cfg["transfers"]):
        x = torch.randn(cfg["numel"] + i, generator=gen)
        c.send({"x": x, "i": torch.tensor(i)}, {"client": cfg["seed"]}).wait(60)
        back = c.recv(timeout=60)
        assert torch.equal(back.tensors["x"], x) and back.meta["client"] == cfg["seed"], "echo mismatch"
    c.close()
    print("ok", flush=True)


def slow_client(cfg: dict) -> None:
    c = Client(
        cfg["address"],
        keys=_keys(cfg, "client"),
        server_key=cfg["server_public"].encode(),
        options=EndpointOptions(lease_s=10.0, chunk_bytes=1 << 20, link=LinkShape(mbps=cfg["mbps"])),
    )
    c.send({"big": torch.zeros(cfg["numel"])})
    print("sending", flush=True)
    time.sleep(3600)


if __name__ == "__main__":
    role, cfg = sys.argv[1], json.loads(sys.argv[2])
    {"echo-server": echo_server, "client": client, "slow-client": slow_client}[role](cfg)
