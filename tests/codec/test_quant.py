"""int8 / int8+noise / fp8 codecs: parts on the wire, dtype restored, error bounds, peer checks."""

from __future__ import annotations

import pytest
import torch
from fedcore.transport.link import InProcessHub

from fedcore.codec import get_codec, noisy_int8


def _h(shape=(2, 9, 4095), dtype=torch.float32, seed=0):
    return (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.02).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name,bound", [("int8", 0.01), ("fp8", 0.04)])
def test_round_trip_restores_dtype_within_bound(name, bound, dtype):
    codec = get_codec(name)
    x = _h(dtype=dtype)
    parts, orig = codec.encode(x)
    codes, scales = parts
    assert orig == dtype and codes.shape == x.shape and scales.shape == x.shape[:-1]
    assert scales.dtype == torch.float32 and codes.element_size() == 1
    decoded = codes.numel() * x.element_size()
    assert codec.check([(str(p.dtype).replace("torch.", ""), tuple(p.shape)) for p in parts], str(dtype)[6:]) == decoded
    back = codec.decode(parts, orig)
    assert back.dtype == dtype and back.shape == x.shape
    assert ((back.float() - x.float()).norm() / x.float().norm()).item() < bound


def test_noise_codec_adds_fresh_noise_of_the_configured_std():
    x = _h((64, 1024))
    codec = noisy_int8(0.5, relative=True)  # sigma = 0.5 * mean|x|
    a = codec.decode(*codec.encode(x))
    b = codec.decode(*codec.encode(x))
    assert not torch.equal(a, b), "every encode draws a fresh seed"
    sigma = 0.5 * x.abs().mean()
    assert abs((a - x).std() / sigma - 1) < 0.05  # quantization adds ~1% of |x| on top
    with pytest.raises(ValueError, match="noise std"):
        get_codec("int8+noise").encode(x)  # the registered instance only decodes
    with pytest.raises(ValueError, match=">= 0"):
        noisy_int8(-1.0)


def test_integer_zero_dim_and_empty_tensors_pass_unchanged():
    codec = get_codec("int8")
    for t in (torch.arange(6), torch.tensor(3.5), torch.empty(0, 4), torch.ones(3, dtype=torch.bool)):
        parts, orig = codec.encode(t)
        assert orig is None and len(parts) == 1 and parts[0] is t


def test_check_refuses_what_the_codec_never_sends():
    codec = get_codec("int8")
    with pytest.raises(ValueError, match="codes and scales"):
        codec.check([("int8", (2, 8))], "float32")
    with pytest.raises(ValueError, match="int8 and float32"):
        codec.check([("uint8", (2, 8)), ("float32", (2,))], "float32")
    with pytest.raises(ValueError, match="do not fit"):
        codec.check([("int8", (2, 8)), ("float32", (3,))], "float32")
    with pytest.raises(ValueError, match="does not pack"):
        codec.check([("int8", (2, 8)), ("float32", (2,))], "int64")


def test_in_process_link_sends_h_plus_4_bytes_per_token_and_counts_them():
    hub = InProcessHub()
    server, client = hub.endpoint("server"), hub.endpoint("c0")
    x = _h((4, 16, 512), dtype=torch.bfloat16)
    client.send({"h_A": x}, codec="int8", tag="h_A")
    msg = server.recv(timeout=5)
    assert msg.tensors["h_A"].dtype == torch.bfloat16 and msg.tensors["h_A"].shape == x.shape
    assert msg.nbytes == x.numel() + 4 * 64  # codes + one fp32 scale per token, vs 2 bytes/elem raw
    assert client.meter_out.snapshot()["h_A"] == msg.nbytes
    with pytest.raises(ValueError, match="reserves"):
        client.send({"h#1": x}, codec="int8")


def test_zero_width_codes_are_refused_before_decoding():
    codec = get_codec("int8")
    with pytest.raises(ValueError, match="do not fit"):
        codec.check([("int8", (5, 0)), ("float32", (5,))], "float32")
    with pytest.raises(ValueError, match="do not fit"):
        codec.check([("int8", (0,)), ("float32", ())], "float32")
