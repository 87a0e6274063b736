"""Byte-exact round trips over real sockets: dtypes, 0-d / empty / odd shapes, chunks, codecs."""

from __future__ import annotations

import pytest
import torch
from fedcore.transport import EndpointOptions
from fedcore.transport.wire import DTYPES

from .conftest import FAST


def _bytes(t: torch.Tensor) -> torch.Tensor:
    """The raw bytes of ``t`` (NaN payloads, -0.0 and padding bits compared too)."""
    return t.reshape(-1).view(torch.uint8) if t.numel() else t.reshape(-1).to(torch.uint8)


def _random(dtype: torch.dtype, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(shape, generator=gen, dtype=torch.float32).to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(max(info.min, -(2**31)), min(info.max, 2**31 - 1), shape, generator=gen, dtype=torch.int64).to(
        dtype
    )


SHAPES = [(), (0,), (3, 0, 2), (1,), (7,), (3, 5, 4095), (2, 1, 8193)]


@pytest.mark.parametrize("dtype_name", sorted(DTYPES))
def test_every_dtype_and_shape_round_trips_byte_exact(pair, dtype_name):
    server, client = pair
    dtype = DTYPES[dtype_name]
    gen = torch.Generator().manual_seed(hash(dtype_name) % 2**31)
    sent = {f"t{i}": _random(dtype, shape, gen) for i, shape in enumerate(SHAPES)}
    client.send(sent, {"dtype": dtype_name}).wait(10)
    msg = server.recv(timeout=10)
    assert msg.meta == {"dtype": dtype_name}
    assert list(msg.tensors) == list(sent)
    for name, tensor in sent.items():
        got = msg.tensors[name]
        assert got.dtype == tensor.dtype and got.shape == tensor.shape
        assert torch.equal(_bytes(got), _bytes(tensor)), name
    # and back: server -> client
    server.send(msg.peer, msg.tensors, {"echo": True}).wait(10)
    back = client.recv(timeout=10)
    for name, tensor in sent.items():
        assert back.tensors[name].shape == tensor.shape
        assert torch.equal(_bytes(back.tensors[name]), _bytes(tensor)), name


def test_nan_inf_and_signed_zero_survive(pair):
    server, client = pair
    t = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 0.0, 1e-45])
    client.send({"x": t})
    got = server.recv(timeout=10).tensors["x"]
    assert torch.equal(got.view(torch.int32), t.view(torch.int32))


def test_non_contiguous_tensors_are_copied_not_refused(pair):
    server, client = pair
    base = torch.randn(6, 9, generator=torch.Generator().manual_seed(1))
    sent = {"t": base.t(), "slice": base[:, ::2], "expand": torch.randn(3, 1).expand(3, 4)}
    client.send(sent)
    msg = server.recv(timeout=10)
    for name, tensor in sent.items():
        assert torch.equal(msg.tensors[name], tensor) and msg.tensors[name].shape == tensor.shape


def test_large_transfer_is_chunked_and_accounted(endpoints, server_keys, client_keys):
    options = EndpointOptions(**{**FAST, "chunk_bytes": 64 * 1024})
    server = endpoints("server", "tcp://127.0.0.1:0", keys=server_keys, allow=[client_keys.public], options=options)
    client = endpoints("client", server.address, keys=client_keys, server_key=server_keys.public, options=options)
    big = torch.randn(1_000_003, generator=torch.Generator().manual_seed(2))  # 4 MB: 62 chunks, odd size
    handle = client.send({"big": big, "small": torch.arange(5)}, step=3)
    msg = server.recv(timeout=20)
    assert torch.equal(msg.tensors["big"], big) and torch.equal(msg.tensors["small"], torch.arange(5))
    assert msg.step == 3 and msg.seq == 1 and msg.session == client.session
    handle.wait(10)
    assert handle.sent.is_set()
    stats = client.stats()
    assert stats["sent"]["data"] >= big.numel() * 4
    assert server.stats()["received"]["data"] == msg.nbytes > big.numel() * 4


@pytest.mark.parametrize("codec,dtype,tol", [("fp16", torch.float16, 1e-3), ("bf16", torch.bfloat16, 8e-3)])
def test_cast_codecs_halve_bytes_and_restore_dtype(pair, codec, dtype, tol):
    server, client = pair
    x = torch.randn(64, 33, generator=torch.Generator().manual_seed(3))
    ids = torch.arange(10)
    client.send({"x": x, "ids": ids}, codec=codec)
    msg = server.recv(timeout=10)
    assert msg.tensors["x"].dtype == torch.float32 and msg.tensors["ids"].dtype == torch.int64
    torch.testing.assert_close(msg.tensors["x"], x.to(dtype).float(), rtol=0, atol=0)
    torch.testing.assert_close(msg.tensors["x"], x, rtol=tol, atol=tol)
    assert torch.equal(msg.tensors["ids"], ids)
    assert msg.nbytes < x.numel() * 4 * 0.6 + 200


def test_bad_send_arguments(pair):
    _, client = pair
    with pytest.raises(TypeError):
        client.send({"x": [1, 2]})
    with pytest.raises(ValueError, match="unknown codec"):
        client.send({"x": torch.ones(1)}, codec="zip")
    with pytest.raises(ValueError, match="cannot be sent"):
        client.send({"x": torch.ones(1, dtype=torch.uint16)})
    with pytest.raises(TypeError, match="meta"):
        client.send({"x": torch.ones(1)}, meta=[1])


def test_plaintext_only_on_loopback(endpoints):
    from fedcore.transport import Client, Server

    with pytest.raises(ValueError, match="only on loopback"):
        Server("tcp://0.0.0.0:0", plaintext=True)
    with pytest.raises(ValueError, match="only on loopback"):
        Client("tcp://10.1.2.3:5555", plaintext=True)
    with pytest.raises(ValueError, match="needs keys"):
        Server("tcp://127.0.0.1:0")
    server = endpoints("server", "tcp://127.0.0.1:0", plaintext=True)
    client = endpoints("client", server.address, plaintext=True)
    client.send({"x": torch.ones(3)})
    assert torch.equal(server.recv(timeout=10).tensors["x"], torch.ones(3))


@pytest.mark.parametrize("codec", ["int8", "fp8"])
def test_quantizing_codecs_over_sockets(pair, codec):
    server, client = pair
    x = torch.randn(3, 7, 257, generator=torch.Generator().manual_seed(5)).to(torch.bfloat16)
    ids = torch.arange(4)
    client.send({"h": x, "ids": ids}, codec=codec)
    msg = server.recv(timeout=10)
    back = msg.tensors["h"]
    assert back.dtype == torch.bfloat16 and back.shape == x.shape and torch.equal(msg.tensors["ids"], ids)
    bound = 0.01 if codec == "int8" else 0.04
    assert ((back.float() - x.float()).norm() / x.float().norm()).item() < bound
    assert msg.nbytes < x.numel() * 2 * 0.55 + 4 * 21 + 512  # ~1 byte per element + scales vs 2 (bf16)
