"""Split head/body/tail against the unsplit model: logits, loss, gradients, generation."""

from __future__ import annotations

import pytest
import torch

from fedcore.model import SplitState, split_generate, split_model
from fedcore.model.tiny import tiny_causal_lm

# (family, config overrides): every family the issue names, plus variants that exercise
# sliding-window masks (Mistral: all layers; Qwen2: mixed full/sliding), tied embeddings and
# eager attention. Small windows (5) make the windows bite at these sequence lengths.
CASES = {
    "llama": ("llama", {}),
    "llama-tied-eager": ("llama", dict(tie_word_embeddings=True, attn_implementation="eager")),
    "qwen2-mixed-window": ("qwen2", dict(use_sliding_window=True, sliding_window=5, max_window_layers=2)),
    "mistral-window": ("mistral", dict(sliding_window=5)),
    "gpt2": ("gpt2", {}),
    "gpt2-eager": ("gpt2", dict(attn_implementation="eager")),
}


def _model(case: str, seed: int = 0):
    family, overrides = CASES[case]
    return tiny_causal_lm(family, num_layers=5, seed=seed, **overrides)


def _batch(padding_side: str, batch: int = 3, steps: int = 13, vocab: int = 128, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, steps), generator=gen)
    mask = torch.ones(batch, steps, dtype=torch.long)
    for row, pad in enumerate([0, 4, 7][:batch]):
        if pad:
            if padding_side == "left":
                mask[row, :pad] = 0
            else:
                mask[row, steps - pad :] = 0
    ids = ids.masked_fill(mask == 0, 0)
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def _cross(state: SplitState, grad: bool) -> SplitState:
    """What a process boundary does: serialise, rebuild, and start a new autograd graph."""
    received = SplitState.from_wire(state.to_wire())
    if grad:
        received.hidden.requires_grad_(True)
    return received


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("blocks", [(1, 1), (2, 1), (0, 3), (3, 0)])
@pytest.mark.parametrize("case", list(CASES))
def test_split_logits_and_loss_match_unsplit(case, blocks, padding_side):
    model = _model(case)
    ids, mask, labels = _batch(padding_side)
    sm = split_model(model, *blocks)
    ref = model(input_ids=ids, attention_mask=mask, labels=labels)
    h_a = sm.head(ids, mask)
    h_b = sm.body(_cross(h_a, grad=False))
    out = sm.tail(_cross(h_b, grad=False), labels=labels)
    real = mask.bool()  # padded query rows are not compared: nothing reads them
    torch.testing.assert_close(out.logits[real], ref.logits[real], rtol=0, atol=1e-5)
    torch.testing.assert_close(out.loss, ref.loss, rtol=0, atol=1e-5)
    assert h_a.hidden.shape == (3, 13, model.config.hidden_size)


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("case", list(CASES))
def test_split_gradients_match_unsplit(case, padding_side):
    model = _model(case)
    ids, mask, labels = _batch(padding_side)
    model.zero_grad()
    model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    ref = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()

    sm = split_model(model, 2, 1)
    h_a = sm.head(ids, mask)  # client
    body_in = _cross(h_a, grad=True)  # server receives h_A
    h_b = sm.body(body_in)
    tail_in = _cross(h_b, grad=True)  # client receives h_B
    sm.tail(tail_in, labels=labels).loss.backward()
    dh_b = tail_in.hidden.grad.clone()  # client -> server: dL/dh_B
    h_b.hidden.backward(dh_b)
    dh_a = body_in.hidden.grad.clone()  # server -> client: dL/dh_A
    h_a.hidden.backward(dh_a)

    assert ref, "model has parameters"
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name} got no gradient through the split"
        torch.testing.assert_close(param.grad, ref[name], rtol=0, atol=1e-5, msg=name)
    assert any(g.abs().sum() > 0 for g in ref.values())


@pytest.mark.parametrize("case", list(CASES))
def test_split_generate_matches_model_generate(case):
    model = _model(case)
    ids, mask, _ = _batch("left", batch=2, steps=9, seed=3)
    cfg = model.generation_config
    expected = model.generate(
        ids,
        attention_mask=mask,
        max_new_tokens=20,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=cfg.pad_token_id,
    )
    sm = split_model(model, 1, 2)
    got = split_generate(sm, ids, mask, max_new_tokens=20)
    assert got.shape == (2, 9 + 20)
    assert torch.equal(got, expected)


def test_split_generate_stops_at_eos_like_model_generate():
    model = _model("llama")
    ids, mask, _ = _batch("left", batch=2, steps=9, seed=3)
    probe = split_generate(split_model(model, 1, 1), ids, mask, max_new_tokens=6)
    eos = int(probe[0, 9 + 2])  # make row 0's third new token the EOS: row 0 finishes early
    expected = model.generate(
        ids, attention_mask=mask, max_new_tokens=6, do_sample=False, eos_token_id=eos, pad_token_id=0
    )
    got = split_generate(split_model(model, 1, 1), ids, mask, max_new_tokens=6, eos_token_id=eos, pad_token_id=0)
    assert torch.equal(got, expected)
    assert (got[0, 9 + 3 :] == 0).all()


def test_generation_moves_only_the_new_token_hidden_state():
    from fedcore.model import GenerationTrace

    model = _model("llama")
    ids, mask, _ = _batch("left", batch=2, steps=9)
    trace = GenerationTrace()
    split_generate(split_model(model, 1, 1), ids, mask, max_new_tokens=5, trace=trace)
    hidden = model.config.hidden_size
    prefill, *decode = trace.head_to_body
    assert prefill >= 2 * 9 * hidden * 4
    for step, nbytes in enumerate(decode, start=1):
        # one token's hidden (B*H fp32) + its positions (B int64) + the mask (B*(9+step) bool)
        assert nbytes == 2 * hidden * 4 + 2 * 8 + 2 * (9 + step)


def test_parts_share_the_models_modules():
    model = _model("llama")
    sm = split_model(model, 1, 1)
    count = sum(p.numel() for part in (sm.head, sm.body, sm.tail) for p in part.parameters())
    assert count == sum(p.numel() for p in model.parameters())
    assert sm.head.layers[0] is model.model.layers[0]
