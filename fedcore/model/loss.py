"""Causal-LM loss computed chunk by chunk, so the (tokens x vocab) logits never exist whole.

The usual path materialises logits (N, V) in the model dtype, an fp32 copy, log-softmax and its
gradient: with N = 4096 tokens and V = 128256 that is ~7 GiB at the loss. Here each chunk of
``chunk_tokens`` rows computes its fp32 logits, the loss and, at once, its gradient with respect
to the hidden states (and the head weight when it trains), then frees them; backward only scales
the stored gradients. The result equals transformers' ForCausalLMLoss (labels shifted left, -100
ignored, mean over the kept tokens).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

IGNORE_INDEX = -100


class _ChunkedLMLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_tokens):  # type: ignore[override]
        # hidden (N, H) model dtype; weight (V, H); targets (N,) int64 with IGNORE_INDEX holes
        kept = targets != IGNORE_INDEX
        count = kept.sum().clamp_min(1).to(torch.float32)
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_tokens):
            h = hidden[start : start + chunk_tokens]
            t = targets[start : start + chunk_tokens]
            keep = kept[start : start + chunk_tokens]
            logits = (h @ weight.t()).float()  # (c, V) fp32, as transformers upcasts before the loss
            if bias is not None:
                logits += bias.float()
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, t.clamp_min(0)[:, None])[:, 0]
            total += ((lse - picked) * keep).sum()
            if not (need_h or need_w or need_b):
                continue
            probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place: d loss_row / d logits = p - onehot
            rows = torch.arange(len(t), device=t.device)
            probs[rows, t.clamp_min(0)] -= keep.to(probs.dtype)
            probs.mul_((keep.to(probs.dtype) / count)[:, None])
            if need_b:
                grad_b += probs.sum(0)
            probs = probs.to(hidden.dtype)
            if need_h:
                torch.mm(probs, weight.to(hidden.dtype), out=grad_h[start : start + chunk_tokens])
            if need_w:
                grad_w.addmm_(probs.t().float(), h.float())
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        return total / count

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        grad_h, grad_w, grad_b = ctx.saved_tensors
        w_dtype, b_dtype = ctx.dtypes
        dh = grad_h * grad_out.to(grad_h.dtype) if grad_h is not None else None
        dw = (grad_w * grad_out).to(w_dtype) if grad_w is not None else None
        db = (grad_b * grad_out).to(b_dtype) if grad_b is not None else None
        return dh, dw, db, None, None


def chunked_lm_loss(
    hidden: torch.Tensor,
    head: nn.Linear,
    labels: torch.Tensor,
    *,
    chunk_tokens: int = 1024,
) -> torch.Tensor:
    """Mean next-token cross-entropy of ``head(hidden)`` against ``labels``, without whole logits.

    hidden (B, T, H) in the model dtype (after the final norm); labels (B, T) int64 as given to a
    transformers causal LM (shifted here; -100 ignored). Returns a 0-d fp32 loss whose backward
    reaches hidden and, if they train, the head's weight and bias. If every label is ignored the
    loss is 0 (transformers returns NaN). Extra memory: an fp32 (chunk_tokens, V) block and its
    model-dtype copy; with a trainable head also an fp32 (V, H) gradient and an fp32 transpose of
    the block.
    """
    if hidden.dim() != 3 or labels.shape != hidden.shape[:2]:
        raise ValueError(f"need hidden (B, T, H) and labels (B, T); got {tuple(hidden.shape)}, {tuple(labels.shape)}")
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    shifted = torch.full_like(labels, IGNORE_INDEX)
    shifted[:, :-1] = labels[:, 1:]
    flat_h = hidden.reshape(-1, hidden.shape[-1])
    return _ChunkedLMLoss.apply(flat_h, head.weight, head.bias, shifted.reshape(-1), chunk_tokens)


def causal_lm_loss(model: Any, input_ids: torch.Tensor, labels: torch.Tensor, *,
                   attention_mask: torch.Tensor | None = None, chunk_tokens: int = 1024) -> torch.Tensor:  # fmt: skip
    """``model(input_ids, labels=labels).loss`` for a transformers causal LM (a PreTrainedModel with
    ``get_decoder`` and ``get_output_embeddings``), through the decoder
    trunk and ``chunked_lm_loss`` (same value; the logits are never materialised)."""
    trunk = model.get_decoder()
    head = model.get_output_embeddings()
    if not isinstance(head, nn.Linear):
        raise ValueError(f"the output embedding must be an nn.Linear, got {type(head).__name__}")
    hidden = trunk(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    return chunked_lm_loss(hidden, head, labels, chunk_tokens=chunk_tokens)
