"""Batched left-padded greedy answers equal one-by-one greedy decoding, without warnings."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

from fedcore.evaluation import greedy_answers
from fedcore.model.tiny import tiny_causal_lm

from ..conftest import LogRecords

LENGTHS = [3, 7, 1, 12, 5, 9, 2]


def _prompts(seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 128, (n,), generator=g).tolist() for n in LENGTHS]


def _unbatched(model, prompt: list[int], eos_ids: set[int], max_new_tokens: int) -> list[int]:
    """Greedy decoding by hand: argmax of the full forward, one token at a time, no padding."""
    ids = list(prompt)
    for _ in range(max_new_tokens):
        token = int(model(torch.tensor([ids])).logits[0, -1].argmax())
        if token in eos_ids:
            break
        ids.append(token)
    return ids[len(prompt) :]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_batched_greedy_answers_equal_unbatched_decoding(family):
    model = tiny_causal_lm(family, seed=1)
    prompts = _prompts()
    # stop ids the model actually emits, so some rows stop early and are padded after their EOS
    free = greedy_answers(model, prompts, pad_id=0, eos_ids=[0], max_new_tokens=8)
    eos_ids = sorted({free[0][2], free[3][4]})
    records = LogRecords()
    logger = logging.getLogger("transformers")
    logger.addHandler(records)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            batched = greedy_answers(model, prompts, pad_id=0, eos_ids=eos_ids, max_new_tokens=8, batch_size=3)
    finally:
        logger.removeHandler(records)
    with torch.no_grad():
        expected = [_unbatched(model, p, set(eos_ids), 8) for p in prompts]
    assert batched == expected
    assert any(len(a) < 8 for a in batched) and any(len(a) == 8 for a in batched)
    assert all(t not in eos_ids for a in batched for t in a)
    assert not [str(w.message) for w in caught], [str(w.message) for w in caught]
    assert not records.messages, records.messages


def test_batch_size_does_not_change_answers():
    model = tiny_causal_lm("llama", seed=2)
    prompts = _prompts(seed=3)
    one = greedy_answers(model, prompts, pad_id=0, eos_ids=[2], max_new_tokens=6, batch_size=1)
    all_at_once = greedy_answers(model, prompts, pad_id=0, eos_ids=[2], max_new_tokens=6, batch_size=len(prompts))
    assert one == all_at_once and all(isinstance(t, int) for a in one for t in a)


def test_greedy_answers_refuses_bad_arguments():
    model = tiny_causal_lm("llama")
    with pytest.raises(ValueError, match="empty prompt"):
        greedy_answers(model, [[5], []], pad_id=0, eos_ids=[2], max_new_tokens=2)
    with pytest.raises(ValueError, match="eos_ids is empty"):
        greedy_answers(model, [[5]], pad_id=0, eos_ids=[], max_new_tokens=2)
    with pytest.raises(TypeError, match="has no generate"):
        greedy_answers(model.model, [[5]], pad_id=0, eos_ids=[2], max_new_tokens=2)
    with pytest.raises(ValueError, match="must be >= 1"):
        greedy_answers(model, [[5]], pad_id=0, eos_ids=[2], max_new_tokens=0)
