"""chunked_lm_loss / causal_lm_loss against transformers' own loss: value and every gradient."""

from __future__ import annotations

import pytest
import torch

from fedcore.model import causal_lm_loss, chunked_lm_loss
from fedcore.model.tiny import tiny_causal_lm


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2"])
@pytest.mark.parametrize("chunk", [1, 7, 4096])
@pytest.mark.parametrize("head_trains", [False, True])
def test_equals_transformers_loss_and_gradients(family, chunk, head_trains):
    model = tiny_causal_lm(family, seed=3)
    if family == "gpt2":  # tied weights: the head trains with the embedding; keep the tie frozen here
        head_trains = False
    model.get_output_embeddings().weight.requires_grad_(head_trains)
    gen = torch.Generator().manual_seed(chunk)
    ids = torch.randint(0, model.config.vocab_size, (3, 11), generator=gen)
    labels = ids.clone()
    labels[0, :4] = -100  # a prompt that is not trained on
    labels[2, 9:] = -100  # right padding
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0
    ref = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    ref_grads = torch.autograd.grad(ref, [p for p in model.parameters() if p.requires_grad])
    ours = causal_lm_loss(model, ids, labels, attention_mask=mask, chunk_tokens=chunk)
    grads = torch.autograd.grad(ours, [p for p in model.parameters() if p.requires_grad])
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_head_bias_gradient_and_errors():
    gen = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(6, 9)
    hidden = torch.randn(2, 5, 6, generator=gen, requires_grad=True)
    labels = torch.randint(0, 9, (2, 5), generator=gen)
    loss = chunked_lm_loss(hidden, head, labels, chunk_tokens=3)
    logits = head(hidden)[:, :-1]
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, 9), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(loss, ref)
    g = torch.autograd.grad(loss, [hidden, head.weight, head.bias])
    g_ref = torch.autograd.grad(ref, [hidden, head.weight, head.bias])
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="labels"):
        chunked_lm_loss(hidden, head, labels[:, :4])
    with pytest.raises(ValueError, match="chunk_tokens"):
        chunked_lm_loss(hidden, head, labels, chunk_tokens=0)
