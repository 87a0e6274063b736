"""FisherAccumulator on a tiny Llama: per-sample traces equal per-sample backward passes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedcore.fisher import FisherAccumulator
from fedcore.lora import inject_lora, lora_parameters
from fedcore.model.tiny import tiny_causal_lm


def _model(dtype=torch.float64):
    model = tiny_causal_lm(
        "llama", num_layers=2, hidden_size=32, num_heads=4, num_kv_heads=2, attn_implementation="eager"
    ).to(dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    inject_lora(model.model.layers, targets=["q", "v", "down"], r=4, alpha=8)
    for p in lora_parameters(model).values():
        nn.init.normal_(p, std=0.2)  # non-zero B: every factor has a gradient
    return model


def _batch(batch=3, steps=9):
    gen = torch.Generator().manual_seed(11)
    ids = torch.randint(3, 128, (batch, steps), generator=gen)
    mask = torch.ones(batch, steps, dtype=torch.long)
    mask[1, 6:] = 0  # right padding: variable lengths
    mask[2, 4:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def _sample_losses(model, ids, mask, labels):
    """L_n: mean token cross-entropy of sample n (the model's own per-sample loss)."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    tgt = labels[:, 1:]
    ce = nn.functional.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=-100, reduction="none")
    return ce.sum(1) / (tgt != -100).sum(1)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_traces_equal_per_sample_backward(reduction):
    model = _model()
    ids, mask, labels = _batch()
    params = lora_parameters(model)
    expected = []
    for n in range(ids.shape[0]):  # reference: one backward per sample (HF masking is not vmappable)
        model.zero_grad()
        _sample_losses(model, ids[n : n + 1], mask[n : n + 1], labels[n : n + 1]).sum().backward()
        expected.append(sum(p.grad.square().sum() for p in params.values()))
    model.zero_grad()
    acc = FisherAccumulator(model, target="lora", grad_scale=ids.shape[0] if reduction == "mean" else 1.0)
    acc.set_mask(mask)
    losses = _sample_losses(model, ids, mask, labels)
    (losses.sum() if reduction == "sum" else losses.mean()).backward()
    torch.testing.assert_close(acc.scores, torch.stack(expected))
    # the diagonal over all LoRA parameters sums to the same traces, and row sums to the diagonal
    assert set(acc.diag) == set(params)
    total = sum(d.sum() for d in acc.diag.values())
    torch.testing.assert_close(total, torch.stack(expected).sum())
    for name, diag in acc.diag.items():
        assert diag.shape == params[name].shape
        torch.testing.assert_close(acc.rowsum[name], diag.sum(1))
    acc.remove()


def test_momentum_over_commits_and_new_batches():
    model = _model(torch.float32)
    ids, mask, labels = _batch()
    acc = FisherAccumulator(model, target="lora", stats=("diag", "trace"), momentum=0.5)
    _sample_losses(model, ids, mask, labels).sum().backward()
    first_scores, first = acc.scores.clone(), {k: v.clone() for k, v in acc.diag.items()}
    acc.commit()
    _sample_losses(model, ids[:2], mask[:2], labels[:2]).sum().backward()
    assert acc.scores.shape == (2,)  # the new batch replaced the old scores
    torch.testing.assert_close(acc.scores, first_scores[:2])
    second = {k: v.clone() for k, v in acc.diag.items()}
    acc.commit()
    for name in first:
        torch.testing.assert_close(acc.fisher[name], 0.5 * first[name] + 0.5 * second[name])
    assert acc.rowsum == {} and acc.fisher_rowsum == {}


def test_full_target_matches_per_sample_backward_and_errors():
    model = tiny_causal_lm("llama", num_layers=2, hidden_size=32).double()
    for name, p in model.named_parameters():
        p.requires_grad_("layers.1." in name and name.endswith("proj.weight"))  # Linear weights of block 1
    weights = [p for p in model.parameters() if p.requires_grad]
    ids, mask, labels = _batch()
    expected = []
    for n in range(ids.shape[0]):
        model.zero_grad()
        _sample_losses(model, ids[n : n + 1], mask[n : n + 1], labels[n : n + 1]).sum().backward()
        expected.append(sum(p.grad.square().sum() for p in weights))
    acc = FisherAccumulator(model, target="full", stats=("trace",))
    _sample_losses(model, ids, mask, labels).sum().backward()
    torch.testing.assert_close(acc.scores, torch.stack(expected))
    with pytest.raises(ValueError, match="no LoRALinear"):
        FisherAccumulator(tiny_causal_lm("llama", num_layers=2), target="lora")
    with pytest.raises(ValueError, match="target"):
        FisherAccumulator(model, target="bias")
    with pytest.raises(ValueError, match="stats"):
        FisherAccumulator(model, target="full", stats=("hessian",))


def test_scores_do_not_leak_across_batches_with_frozen_blocks():
    from fedcore.lora import train_blocks

    model = _model(torch.float32)
    train_blocks(model, [1], mode="lora")  # block 0's LoRA is frozen: its hooks must not hold inputs
    ids, mask, labels = _batch()
    acc = FisherAccumulator(model, target="lora")
    _sample_losses(model, ids, mask, labels).sum().backward()
    first = acc.scores.clone()
    _sample_losses(model, ids, mask, labels).sum().backward()
    torch.testing.assert_close(acc.scores, first)
    assert all(".layers.1." in name for name in acc.diag)


def test_a_module_reused_before_backward_is_refused():
    model = _model(torch.float32)
    ids, mask, labels = _batch()
    FisherAccumulator(model, target="lora")
    model(input_ids=ids)
    with pytest.raises(ValueError, match="ran twice before a backward"):
        model(input_ids=ids)
