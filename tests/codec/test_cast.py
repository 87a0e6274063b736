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
    sent, orig = codec.encode(x)
    assert sent.dtype == wire and orig == dtype
    back = codec.decode(sent, orig)
    assert back.dtype == dtype and torch.equal(back, x.to(wire).to(dtype))


@pytest.mark.parametrize("name", ["raw", "fp16", "bf16"])
def test_integers_and_matching_dtypes_pass_unchanged(name):
    codec = get_codec(name)
    for t in (torch.arange(5), torch.ones(3, dtype=torch.bool), torch.ones(2, dtype=torch.float16)):
        sent, orig = codec.encode(t)
        if name == "bf16" and t.dtype == torch.float16:
            continue  # fp16 -> bf16 is a real (lossy) cast; covered above for fp32/fp64
        assert sent is t and orig is None


def test_registry():
    assert {"raw", "fp16", "bf16"} <= set(CODECS)
    with pytest.raises(ValueError, match="unknown codec"):
        get_codec("zstd")
    with pytest.raises(ValueError, match="already registered"):
        register_codec(CastCodec("fp16", torch.float16))
