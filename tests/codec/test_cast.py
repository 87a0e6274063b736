"""raw / fp16 / bf16 codecs: what travels, and what comes back."""

from __future__ import annotations

import pytest
import torch

from fedcore.codec import CODECS, CastCodec, get_codec, register_codec


@pytest.mark.parametrize("name,wire", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cast_codecs(name, wire, dtype):
    codec = get_codec(name)
    x = torch.randn(7, 13, dtype=dtype, generator=torch.Generator().manual_seed(0))
    (sent,), orig = codec.encode(x)
    assert sent.dtype == wire and orig == dtype
    assert codec.check([(str(wire).replace("torch.", ""), tuple(sent.shape))], str(dtype).replace("torch.", "")) == (
        x.numel() * x.element_size()
    )
    back = codec.decode([sent], orig)
    assert back.dtype == dtype and torch.equal(back, x.to(wire).to(dtype))


@pytest.mark.parametrize("name", ["raw", "fp16", "bf16"])
def test_integers_and_matching_dtypes_pass_unchanged(name):
    codec = get_codec(name)
    for t in (torch.arange(5), torch.ones(3, dtype=torch.bool), torch.ones(2, dtype=torch.float16)):
        (sent,), orig = codec.encode(t)
        if name == "bf16" and t.dtype == torch.float16:
            continue  # fp16 -> bf16 is a real (lossy) cast; covered above for fp32/fp64
        assert sent is t and orig is None


def test_registry():
    assert {"raw", "fp16", "bf16", "int8", "int8+noise", "fp8"} <= set(CODECS)
    with pytest.raises(ValueError, match="unknown codec"):
        get_codec("zstd")
    with pytest.raises(ValueError, match="already registered"):
        register_codec(CastCodec("fp16", torch.float16))


@pytest.mark.parametrize("name", ["fp16", "bf16"])
def test_check_refuses_what_the_codec_never_sends(name):
    codec = get_codec(name)
    with pytest.raises(ValueError, match="does not turn"):
        codec.check([("int8", (4,))], "float32")
    with pytest.raises(ValueError, match="does not turn"):
        codec.check([("float16" if name == "fp16" else "bfloat16", (4,))], "int64")
    with pytest.raises(ValueError, match="one part"):
        codec.check([("float16", (4,)), ("float32", ())], "float32")
    with pytest.raises(ValueError, match="does not change"):
        get_codec("raw").check([("float32", (4,))], "float64")
