"""LoRALinear against its formula, injection by name, and LoRA state I/O."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from fedcore.lora import LoRALinear, inject_lora, load_lora_state, lora_parameters, lora_state
from fedcore.model.tiny import tiny_causal_lm


@pytest.mark.parametrize("d_in,d_out,r", [(7, 5, 1), (33, 17, 4), (64, 128, 16)])
@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_lora_linear_matches_formula_and_trains_only_factors(d_in, d_out, r, kind):
    torch.manual_seed(d_in * 100 + r)
    if kind == "linear":
        base = nn.Linear(d_in, d_out).double()
        weight = base.weight  # (d_out, d_in)
    else:
        base = Conv1D(d_out, d_in).double()
        nn.init.normal_(base.weight)
        nn.init.normal_(base.bias)
        weight = base.weight.t()  # Conv1D stores (d_in, d_out)
    layer = LoRALinear(base, r=r, alpha=2.0 * r + 1)
    with torch.no_grad():
        layer.lora_B.normal_()  # B starts at zero; make the update visible
    x = torch.randn(3, 5, d_in, dtype=torch.float64, requires_grad=True)
    expected = x @ weight.t() + base.bias + layer.scale * (x @ layer.lora_A.t()) @ layer.lora_B.t()
    out = layer(x)
    torch.testing.assert_close(out, expected)
    out.square().sum().backward()
    assert layer.lora_A.grad is not None and layer.lora_B.grad is not None
    assert all(p.grad is None for p in base.parameters())
    assert layer.scale == pytest.approx((2.0 * r + 1) / r)


def test_fresh_adapter_leaves_output_unchanged():
    torch.manual_seed(0)
    base = nn.Linear(9, 4)
    x = torch.randn(2, 9)
    expected = base(x)
    torch.testing.assert_close(LoRALinear(base, r=3, alpha=6)(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("bad", [dict(r=0), dict(r=2, dropout=1.0)])
def test_lora_linear_rejects_bad_arguments(bad):
    kwargs = dict(alpha=1.0) | bad
    with pytest.raises(ValueError):
        LoRALinear(nn.Linear(4, 4), **kwargs)
    with pytest.raises(TypeError):
        LoRALinear(nn.Conv2d(1, 1, 1), r=1, alpha=1.0)


def test_inject_by_short_names_llama_and_gpt2():
    llama = tiny_causal_lm("llama", num_layers=3)
    names = inject_lora(llama.model.layers[1:], targets=["q", "v", "down"], r=2, alpha=4)
    assert names == [
        "0.self_attn.q_proj",
        "0.self_attn.v_proj",
        "0.mlp.down_proj",
        "1.self_attn.q_proj",
        "1.self_attn.v_proj",
        "1.mlp.down_proj",
    ]
    assert len(lora_parameters(llama)) == 12
    assert not any(isinstance(m, LoRALinear) for m in llama.model.layers[0].modules())
    gpt2 = tiny_causal_lm("gpt2", num_layers=2)
    names = inject_lora(gpt2.transformer.h, targets=["q", "o", "down"], r=2, alpha=4)
    assert names == ["0.attn.c_attn", "0.attn.c_proj", "0.mlp.c_proj", "1.attn.c_attn", "1.attn.c_proj", "1.mlp.c_proj"]


@pytest.mark.parametrize(
    "family,attn,mlp",
    [
        ("gemma2", ("self_attn.q_proj", "self_attn.o_proj"), ("mlp.up_proj", "mlp.down_proj")),
        ("gemma3", ("self_attn.q_proj", "self_attn.o_proj"), ("mlp.up_proj", "mlp.down_proj")),
        ("gpt_neox", ("attention.query_key_value", "attention.dense"), ("mlp.dense_h_to_4h", "mlp.dense_4h_to_h")),
        (
            "falcon",
            ("self_attention.query_key_value", "self_attention.dense"),
            ("mlp.dense_h_to_4h", "mlp.dense_4h_to_h"),
        ),
    ],
)
def test_inject_by_short_names_new_families(family, attn, mlp):
    from fedcore.model import blocks

    model = tiny_causal_lm(family, num_layers=2)
    names = inject_lora(blocks(model), targets=["q", "o", "up", "down"], r=2, alpha=4)
    assert names == [f"{i}.{n}" for i in range(2) for n in (*attn, *mlp)]


def test_inject_refuses_targets_that_match_nothing():
    llama = tiny_causal_lm("llama", num_layers=3)
    with pytest.raises(ValueError, match="no module matched"):
        inject_lora(llama.model.layers, targets=["qq_proj"])


def test_state_round_trip_and_mismatch():
    llama = tiny_causal_lm("llama", num_layers=3)
    inject_lora(llama.model.layers, targets=["q"], r=2, alpha=4)
    state = {k: torch.randn_like(v) for k, v in lora_state(llama).items()}
    load_lora_state(llama, state)
    for name, p in lora_parameters(llama).items():
        assert torch.equal(p, state[name])
    state.pop(next(iter(state)))
    with pytest.raises(ValueError, match="missing"):
        load_lora_state(llama, state)


def test_inject_by_block_ids():
    from fedcore.lora import inject_lora_blocks

    llama = tiny_causal_lm("llama", num_layers=4)
    names = inject_lora_blocks(llama, [1], layers_per_block=2, targets=["o"], r=2, alpha=4)
    assert names == ["0.self_attn.o_proj", "1.self_attn.o_proj"]
    assert isinstance(llama.model.layers[2].self_attn.o_proj, LoRALinear)
    assert not isinstance(llama.model.layers[1].self_attn.o_proj, LoRALinear)
    with pytest.raises(ValueError, match="out of range"):
        inject_lora_blocks(llama, [5])
