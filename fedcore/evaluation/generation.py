"""Batched greedy decoding with the full (unsplit) Hugging Face model, for evaluation.

Prompts are sorted by length, left-padded per batch and decoded with ``model.generate`` under an
explicit greedy ``GenerationConfig`` (so the checkpoint's sampling defaults neither apply nor
warn); each answer is the new tokens up to, not including, the first EOS.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import GenerationConfig


def _left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, T) int64, rows right-aligned, T = longest row."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids, mask


def _answer(tokens: list[int], eos_ids: set[int]) -> list[int]:
    """``tokens`` up to (not including) the first EOS; what follows it is padding."""
    for i, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[:i]
    return tokens


@torch.no_grad()
def greedy_answers(
    model: torch.nn.Module,
    prompts: Sequence[list[int]],
    *,
    pad_id: int,
    eos_ids: Sequence[int],
    max_new_tokens: int,
    batch_size: int = 8,
) -> list[list[int]]:
    """Greedy answers of ``model`` (a Hugging Face causal LM, with ``generate``) to ``prompts``
    (token ids, no padding): one list of new token ids per prompt.

    Decoding stops at any of ``eos_ids`` (stripped, with the padding after it) or after
    ``max_new_tokens``. Batches of ``batch_size`` prompts of similar length are left-padded with
    ``pad_id`` and masked, so each answer equals unbatched greedy decoding of its prompt (up to
    floating-point ties). Inputs go to the device of the model's parameters; answers are Python ints, in prompt order.
    Raises ``ValueError`` for an empty prompt, no eos_ids, or non-positive sizes; ``TypeError``
    for a model without ``generate``.
    """
    generate: Any = getattr(model, "generate", None)
    if not callable(generate):
        raise TypeError(f"{type(model).__name__} has no generate(); pass the full Hugging Face causal LM")
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"max_new_tokens ({max_new_tokens}) and batch_size ({batch_size}) must be >= 1")
    if not eos_ids:
        raise ValueError("eos_ids is empty; pass the tokenizer's end-of-turn / end-of-text ids")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("an empty prompt has nothing to condition on; give every prompt at least one token")
    config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        eos_token_id=list(eos_ids),
        pad_token_id=pad_id,
        temperature=None,
        top_p=None,
        top_k=None,
    )
    eos = set(eos_ids)
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask = _left_pad([prompts[i] for i in chunk], pad_id)
        out = generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config)
        new = out[:, ids.shape[1] :].tolist()  # (B, n) n <= max_new_tokens
        for i, tokens in zip(chunk, new, strict=True):
            answers[i] = _answer(tokens, eos)
    return answers
