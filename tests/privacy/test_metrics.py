"""Token recovery and the text scores on hand-made pairs."""

from __future__ import annotations

import pytest
import torch

from fedcore.privacy import HiddenSample, text_scores, token_recovery


def test_token_recovery_counts_real_tokens_only():
    ids = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    mask = ids != 0
    sample = HiddenSample(ids, torch.zeros(2, 4, 3), mask)
    pred = torch.tensor([[1, 9, 3, 7], [4, 9, 9, 9]])
    assert token_recovery(pred, sample) == 3 / 5


def test_text_scores_by_hand():
    same = text_scores(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert same == pytest.approx({"rouge_1": 100.0, "rouge_2": 100.0, "rouge_l": 100.0, "bleu_4": 100.0})
    half = text_scores(["the cat ran"], ["the cat sat"])
    # unigrams: 2 of 3 each way (F1 2/3); bigrams: "the cat" 1 of 2 (F1 1/2); LCS 2 (F1 2/3)
    assert abs(half["rouge_1"] - 200 / 3) < 1e-9 and abs(half["rouge_2"] - 50) < 1e-9
    assert abs(half["rouge_l"] - 200 / 3) < 1e-9 and 0 <= half["bleu_4"] < 100
