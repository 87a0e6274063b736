"""Gemma-2, Gemma-3, GPT-NeoX and Falcon split exactly: logits, loss, every gradient, generation.

The same checks and tolerances as tests/model/test_split.py, on the families whose forward does
more than Llama's: Gemma scales the embedding, softcaps attention and final logits and alternates
sliding and full layers (Gemma-3 with one rotary embedding per layer type); GPT-NeoX has a parallel
residual, partial rotary and a fused qkv; Falcon returns tuples from its layers and has multi-query,
new-architecture (grouped kv) and ALiBi variants. Configurations the split cannot reproduce are
refused with a ValueError naming what is unsupported.
"""

from __future__ import annotations

import pytest
import torch
from transformers import BloomConfig, BloomForCausalLM

from fedcore.model import SplitState, blocks, generate_through, group_blocks, split_generate, split_model
from fedcore.model.tiny import tiny_causal_lm

from .test_split import _batch

# (family, config overrides). Gemma's default caps (30 / 50) barely bite at tiny random weights, so
# one case per Gemma uses small caps; windows of 5 bite at these lengths (13 and 9 + 20 tokens).
CASES = {
    "gemma2": ("gemma2", {}),
    "gemma2-small-caps": ("gemma2", dict(final_logit_softcapping=1.0, attn_logit_softcapping=2.0)),
    "gemma3": ("gemma3", {}),
    "gemma3-eager-capped-tied": (
        "gemma3",
        dict(attn_implementation="eager", final_logit_softcapping=1.0, tie_word_embeddings=True),
    ),
    "gpt_neox": ("gpt_neox", {}),
    "gpt_neox-sequential-eager": (
        "gpt_neox",
        dict(use_parallel_residual=False, attn_implementation="eager", rotary_pct=1.0),
    ),
    "falcon": ("falcon", {}),
    "falcon-new-arch-eager": ("falcon", dict(new_decoder_architecture=True, attn_implementation="eager")),
    "falcon-alibi": ("falcon", dict(alibi=True, multi_query=False, parallel_attn=False, bias=True)),
    "falcon-alibi-eager": (
        "falcon",
        dict(alibi=True, multi_query=False, parallel_attn=False, bias=True, attn_implementation="eager"),
    ),
}
BLOCKS = [(2, 1), (0, 3), (3, 0)]


@pytest.fixture(scope="module", params=list(CASES))
def case_model(request):
    family, overrides = CASES[request.param]
    return tiny_causal_lm(family, num_layers=5, seed=0, **overrides)


def _cross(state: SplitState) -> SplitState:
    """A process boundary: serialise, rebuild, start a new autograd graph at the received hidden."""
    received = SplitState.from_wire(state.to_wire())
    received.hidden.requires_grad_(True)
    return received


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("split", BLOCKS, ids=[f"{a}-{c}" for a, c in BLOCKS])
def test_split_logits_loss_and_every_gradient_match_unsplit(case_model, split, padding_side):
    model = case_model
    ids, mask, labels = _batch(padding_side, seed=10 * split[0] + split[1])
    model.zero_grad()
    ref = model(input_ids=ids, attention_mask=mask, labels=labels)
    ref.loss.backward()
    ref_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()

    sm = split_model(model, *split)
    h_a = sm.head(ids, mask)
    body_in = _cross(h_a)
    h_b = sm.body(body_in)
    tail_in = _cross(h_b)
    out = sm.tail(tail_in, labels=labels)
    out.loss.backward()
    h_b.hidden.backward(tail_in.hidden.grad)  # dL/dh_B to the server
    h_a.hidden.backward(body_in.hidden.grad)  # dL/dh_A to the client

    real = mask.bool()  # padded query rows are not compared: nothing reads them
    torch.testing.assert_close(out.logits[real], ref.logits[real], rtol=0, atol=1e-5)
    torch.testing.assert_close(out.loss, ref.loss, rtol=0, atol=1e-5)
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name} got no gradient through the split"
        torch.testing.assert_close(param.grad, ref_grads[name], rtol=0, atol=1e-5, msg=name)
    assert any(g.abs().sum() > 0 for g in ref_grads.values())
    model.zero_grad()


@pytest.mark.parametrize("use_cache", [True, False], ids=["kv-cache", "recompute"])
def test_split_generate_matches_model_generate(case_model, use_cache):
    model = case_model
    ids, mask, _ = _batch("left", batch=2, steps=9, seed=3)
    new = 20 if use_cache else 12  # recomputing every step costs more; 9 + 12 still crosses the windows
    expected = model.generate(
        ids, attention_mask=mask, max_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0
    )
    sm = split_model(model, 1, 2)
    if use_cache:
        got = split_generate(sm, ids, mask, max_new_tokens=new)
    else:
        got = generate_through(
            sm.head, sm.tail, lambda s, first: sm.body(s), ids, mask, max_new_tokens=new, use_cache=False
        )
    assert got.shape == (2, 9 + new)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("family", ["gemma2", "gemma3", "gpt_neox", "falcon"])
def test_blocks_and_group_blocks(family):
    model = tiny_causal_lm(family, num_layers=3)
    layers = list(model.base_model.layers if hasattr(model.base_model, "layers") else model.base_model.h)
    assert blocks(model) == layers
    assert [list(g) for g in group_blocks(model, 2)] == [layers[:2], layers[2:]]


def test_gemma3_has_both_layer_types_and_rotaries():
    model = tiny_causal_lm("gemma3", num_layers=4)
    assert model.config.layer_types == ["sliding_attention", "full_attention"] * 2
    sm = split_model(model, 1, 1)
    assert sm.head.rotary_per_type and sm.body.layer_types == ("full_attention", "sliding_attention")


@pytest.mark.parametrize("family", ["gemma2", "gemma3"])
def test_bidirectional_gemma_is_refused(family):
    model = tiny_causal_lm(family, num_layers=3, use_bidirectional_attention=True)
    with pytest.raises(ValueError, match="use_bidirectional_attention=True .* not supported"):
        split_model(model, 1, 1)


def test_falcon_lookalike_bloom_is_refused():
    # Bloom has Falcon's word_embeddings / h / ln_f but an extra embedding norm and its own ALiBi
    bloom = BloomForCausalLM(BloomConfig(vocab_size=64, hidden_size=32, n_layer=3, n_head=2))
    with pytest.raises(ValueError, match="Falcon's attribute names .* model type 'bloom'"):
        split_model(bloom, 1, 1)


def test_gpt_neox_lookalike_without_its_layout_is_refused():
    from transformers import GPTNeoXJapaneseConfig, GPTNeoXJapaneseForCausalLM

    config = GPTNeoXJapaneseConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, bos_token_id=1, eos_token_id=2
    )
    with pytest.raises(ValueError, match="none of the known layouts"):
        split_model(GPTNeoXJapaneseForCausalLM(config), 1, 1)
