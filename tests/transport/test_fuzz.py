"""Fuzzing a live server (a separate process) with 10,000+ random and mutated messages.

The fuzzer holds an allowed CURVE key (an authenticated but hostile client), so every frame
reaches the parser; the server runs with ban_s=0 so none is skipped. Afterwards the server
process must be alive, its memory bounded, and a legitimate client served correctly.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest
import torch
import zmq
from fedcore.transport import Client, EndpointOptions, Keypair
from fedcore.transport.assembly import build_outgoing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")  # large reprs

PROC = str(Path(__file__).with_name("_proc.py"))
BATCH = 20
EXAMPLES = 520  # 520 x 20 = 10,400 messages

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.binary(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=8,
)
rows = st.lists(
    st.one_of(
        values,
        st.tuples(
            st.text(max_size=5),
            st.sampled_from(["float32", "int8", "qint8", 3]),
            st.lists(st.integers(-2, 2**40), max_size=9),
            st.integers(-5, 2**40),
            st.integers(-5, 2**40),
            st.sampled_from(["raw", "fp16", "zip"]),
            st.none(),
        ).map(list),
    ),
    max_size=6,
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([1, 1, 2, "1"]),
        "kind": st.sampled_from(["data", "chunk", "ack", "error", "ping", "pong", "bye", "rekey", "x"]),
        "session": st.one_of(st.text(max_size=70), values),
        "seq": st.one_of(st.integers(-3, 2**64 - 1), values),
        "step": st.integers(-3, 2**63),
        "codec": st.sampled_from(["raw", "fp16", "bf16", "", "zip"]),
        "meta": values,
        "tensors": rows,
        "total": st.integers(-1, 2**62),
        "chunks": st.integers(-1, 9),
        "off": st.integers(-1, 2**40),
        "n": st.integers(-1, 2**40),
        "address": values,
        "server_key": values,
    },
)


def _valid_message() -> list[bytes]:
    out = build_outgoing(
        seq=random.randint(1, 10**6),
        session="f" * 16,
        step=0,
        kind="data",
        meta={"a": 1},
        codec="raw",
        tensors={"x": torch.arange(6)},
        chunk_bytes=1 << 20,
        max_bytes=1 << 20,
    )
    return [bytes(f) for f in out.messages[0]]


def _mutate(frames: list[bytes], rnd: random.Random) -> list[bytes]:
    frames = list(frames)
    i = rnd.randrange(len(frames))
    data = bytearray(frames[i])
    for _ in range(rnd.randint(1, 4)):
        if data:
            data[rnd.randrange(len(data))] = rnd.randrange(256)
    frames[i] = bytes(data[: rnd.randint(0, len(data))] if rnd.random() < 0.2 else data)
    return frames


messages = st.one_of(
    st.lists(st.binary(max_size=300), min_size=1, max_size=4),  # pure noise
    st.tuples(headers, st.lists(st.binary(max_size=200), max_size=3)).map(
        lambda hp: [msgpack.packb(hp[0], use_bin_type=True), *hp[1]]
    ),  # structured nonsense
    st.randoms(use_true_random=False).map(lambda r: _mutate(_valid_message(), r)),  # mutated valid ones
    st.just([msgpack.packb(msgpack.ExtType(5, b"boom"))]),  # ext types
    st.just(
        [
            msgpack.packb(
                {
                    "v": 1,
                    "kind": "data",
                    "session": "s",
                    "step": 0,
                    "seq": 1,
                    "codec": "raw",
                    "meta": {},
                    "tensors": [["x", "uint8", [2**40], 0, 2**40, "raw", None]],
                    "total": 2**40,
                    "chunks": 1,
                    "off": 0,
                    "n": 0,
                }
            )
        ]
    ),  # claims 1 TB
    st.just([b"\x00" * 70_000]),  # over the header cap
)


@pytest.fixture(scope="module")
def live_server():
    server_keys, good, hostile = Keypair.generate(), Keypair.generate(), Keypair.generate()
    cfg = {
        "server_public": server_keys.public.decode(),
        "server_secret": server_keys.secret.decode(),
        "allow": [good.public.decode(), hostile.public.decode()],
        "ban_s": 0.0,
        "lease_s": 30.0,
        "max_transfer_bytes": 64 << 20,
    }
    proc = subprocess.Popen(
        [sys.executable, PROC, "echo-server", json.dumps(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONSAFEPATH="1"),
    )
    address = proc.stdout.readline().strip()
    assert address.startswith("tcp://"), proc.stderr.read()
    ctx = zmq.Context()
    fuzzer = ctx.socket(zmq.DEALER)
    fuzzer.setsockopt(zmq.LINGER, 0)
    fuzzer.setsockopt(zmq.SNDHWM, 100_000)
    fuzzer.curve_secretkey, fuzzer.curve_publickey = hostile.secret, hostile.public
    fuzzer.curve_serverkey = server_keys.public
    fuzzer.connect(address)
    client = Client(address, keys=good, server_key=server_keys.public, options=EndpointOptions(lease_s=30.0))
    yield {"proc": proc, "fuzzer": fuzzer, "client": client, "address": address, "sent": [0]}
    client.close()
    fuzzer.close(0)
    ctx.term()
    proc.kill()
    proc.wait(10)


def _rss_kb(client: Client) -> tuple[int, int]:
    client.send({}, {"cmd": "rss"}).wait(30)
    msg = client.recv(timeout=30)
    return msg.meta["rss_kb"], msg.meta["refused"]


def test_fuzz_live_server(live_server):
    client, fuzzer = live_server["client"], live_server["fuzzer"]
    baseline, _ = _rss_kb(client)

    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(st.lists(messages, min_size=BATCH, max_size=BATCH))
    def fuzz(batch):
        for frames in batch:
            fuzzer.send_multipart(frames)
        live_server["sent"][0] += len(batch)

    fuzz()
    # raw TCP garbage from unauthenticated peers too
    host, port = live_server["address"][len("tcp://") :].rsplit(":", 1)
    rnd = random.Random(0)
    for _ in range(50):
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            raw.sendall(bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 2000))))
    assert live_server["sent"][0] >= 10_000

    time.sleep(1.0)
    assert live_server["proc"].poll() is None, live_server["proc"].stderr.read()[-3000:]
    x = torch.randn(1000, generator=torch.Generator().manual_seed(9))
    client.send({"x": x}, {"probe": 1}).wait(60)
    back = client.recv(timeout=60)
    assert back.meta["probe"] == 1 and torch.equal(back.tensors["x"], x)
    rss, refused = _rss_kb(client)
    assert refused > 0  # the server did see (and refuse) the hostile input
    assert rss - baseline < 300_000, f"server RSS grew by {(rss - baseline) / 1e3:.0f} MB under fuzzing"
