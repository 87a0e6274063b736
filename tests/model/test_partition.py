"""blocks / group_blocks / split_model argument checks and SplitState's wire form."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertModel

from fedcore.model import SplitState, blocks, group_blocks, split_model
from fedcore.model.tiny import tiny_causal_lm


@pytest.fixture(scope="module")
def llama():
    return tiny_causal_lm("llama", num_layers=5)


def test_blocks_are_the_layers_in_order(llama):
    assert blocks(llama) == list(llama.model.layers)
    gpt2 = tiny_causal_lm("gpt2", num_layers=3)
    assert blocks(gpt2) == list(gpt2.transformer.h)


@pytest.mark.parametrize("per_block,sizes", [(1, [1] * 5), (2, [2, 2, 1]), (5, [5])])
def test_group_blocks(llama, per_block, sizes):
    groups = group_blocks(llama, per_block)
    assert [len(g) for g in groups] == sizes
    assert [m for g in groups for m in g] == list(llama.model.layers)


@pytest.mark.parametrize("bad", [0, -1, 6, 2.0, True])
def test_group_blocks_rejects_bad_sizes(llama, bad):
    with pytest.raises(ValueError, match="layers_per_block"):
        group_blocks(llama, bad)


@pytest.mark.parametrize(
    "blocks_a,blocks_c,match",
    [
        (-1, 1, "blocks_a must be >= 0"),
        (1, -2, "blocks_c must be >= 0"),
        (3, 2, r"blocks_a \+ blocks_c must be <= 4"),
        (5, 0, r"blocks_a \+ blocks_c must be <= 4"),
        (0, 5, r"blocks_a \+ blocks_c must be <= 4"),
        (1.5, 1, "blocks_a must be an int"),
        (1, None, "blocks_c must be an int"),
    ],
)
def test_split_model_rejects_bad_counts(llama, blocks_a, blocks_c, match):
    with pytest.raises(ValueError, match=match):
        split_model(llama, blocks_a, blocks_c)


def test_split_model_rejects_unsplittable_architectures():
    with pytest.raises(ValueError, match="cannot split Linear"):
        split_model(nn.Linear(4, 4), 1, 1)
    bert = BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=50)
    )
    with pytest.raises(ValueError, match="cannot split BertModel"):
        split_model(bert, 0, 0)


def test_split_counts_partition_the_layers(llama):
    sm = split_model(llama, 2, 1)
    assert (len(sm.head.layers), len(sm.body.layers), len(sm.tail.layers)) == (2, 2, 1)
    assert sm.body.start == 2 and sm.tail.start == 4


def _state(batch=2, steps=5, hidden=8, mask=True):
    gen = torch.Generator().manual_seed(0)
    return SplitState(
        hidden=torch.randn(batch, steps, hidden, generator=gen),
        position_ids=torch.arange(steps).expand(batch, steps).clone(),
        attention_mask=torch.ones(batch, steps + 3, dtype=torch.long) if mask else None,
    )


@pytest.mark.parametrize("mask", [True, False])
def test_wire_round_trip(mask):
    state = _state(mask=mask)
    wire = state.to_wire()
    assert all(isinstance(v, (torch.Tensor, int)) for v in wire.values())
    back = SplitState.from_wire(wire)
    assert torch.equal(back.hidden, state.hidden)
    assert torch.equal(back.position_ids, state.position_ids)
    if mask:
        assert back.attention_mask.dtype == torch.bool and back.attention_mask.all()
    else:
        assert back.attention_mask is None
    assert state.wire_nbytes() == sum(
        v.numel() * v.element_size() for v in wire.values() if isinstance(v, torch.Tensor)
    )


def test_wire_detaches_hidden():
    state = _state()
    state.hidden.requires_grad_(True)
    assert not state.to_wire()["hidden"].requires_grad


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda w: w.update(extra=torch.zeros(1)), "unknown SplitState wire keys"),
        (lambda w: w.update(version=99), "wire version"),
        (lambda w: w.pop("hidden"), "needs a tensor 'hidden'"),
        (lambda w: w.update(hidden=torch.zeros(2, 5)), r"hidden must be \(B, T, H\)"),
        (lambda w: w.update(hidden=torch.zeros(2, 5, 8, dtype=torch.int32)), "float tensor"),
        (lambda w: w.update(position_ids=torch.zeros(2, 4, dtype=torch.long)), "position_ids must be"),
        (lambda w: w.update(position_ids=torch.zeros(2, 5)), "int64"),
        (lambda w: w.update(attention_mask=torch.ones(3, 8)), "attention_mask must be"),
        (lambda w: w.update(attention_mask=[1, 1]), "must be a tensor"),
    ],
)
def test_from_wire_rejects_malformed_input(mutate, match):
    wire = _state().to_wire()
    mutate(wire)
    with pytest.raises(ValueError, match=match):
        SplitState.from_wire(wire)
