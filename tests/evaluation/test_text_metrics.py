"""ROUGE-L F1 against a hand-written LCS reference, and SQuAD-style exact-match normalisation."""

from __future__ import annotations

import random

import pytest

from fedcore.evaluation import exact_match, normalize_answer, rouge_l

pytest.importorskip("rouge_score", reason="rouge-score is not installed")


def lcs_f1(prediction: str, reference: str) -> float:
    """ROUGE-L F1 by its definition: LCS of the word lists over both lengths, harmonic mean."""
    p, r = prediction.split(), reference.split()
    table = [[0] * (len(r) + 1) for _ in range(len(p) + 1)]
    for i, a in enumerate(p):
        for j, b in enumerate(r):
            table[i + 1][j + 1] = table[i][j] + 1 if a == b else max(table[i][j + 1], table[i + 1][j])
    lcs = table[-1][-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


@pytest.mark.parametrize(
    "prediction, reference, expected",
    [
        ("the cat sat on the mat", "the cat is on the mat", 5 / 6),  # LCS "the cat on the mat"
        ("police killed the gunman", "the gunman was killed by police", 0.4),  # LCS 2: P 2/4, R 2/6
        ("Running dogs!", "the dog runs", 0.4),  # stemmed: run dog / the dog run, LCS 1: P 1/2, R 1/3
        ("Paris", "Paris", 1.0),
        ("", "Paris", 0.0),
        ("London", "Paris", 0.0),
    ],
)
def test_rouge_l_matches_hand_computed_f1(prediction, reference, expected):
    assert rouge_l([prediction], [reference]) == pytest.approx(expected)


def test_rouge_l_is_the_mean_of_the_lcs_reference_on_random_word_strings():
    rng = random.Random(0)
    words = ["a", "b", "c", "d", "x"]  # single letters: the stemmer leaves them alone
    preds = [" ".join(rng.choices(words, k=rng.randint(1, 9))) for _ in range(40)]
    refs = [" ".join(rng.choices(words, k=rng.randint(1, 9))) for _ in range(40)]
    expected = sum(map(lcs_f1, preds, refs)) / len(preds)
    assert rouge_l(preds, refs) == pytest.approx(expected)
    assert 0.0 <= rouge_l(preds, refs) <= 1.0


@pytest.mark.parametrize(
    "text, normal",
    [
        ("The Paris!", "paris"),
        ("an apple", "apple"),
        ("  Paris,   France. ", "paris france"),
        ("A theater", "theater"),  # articles only as whole words
        ("it's 3.5", "its 35"),
    ],
)
def test_normalize_answer_is_squad_normalisation(text, normal):
    assert normalize_answer(text) == normal


def test_exact_match_is_the_fraction_equal_after_normalising():
    preds = ["The Paris!", "an apple", "London", "Paris France"]
    refs = ["paris", "Apple.", "Paris", "paris,  france"]
    assert exact_match(preds, refs) == 0.75


@pytest.mark.parametrize("metric", [rouge_l, exact_match])
def test_metrics_refuse_mismatched_or_empty_inputs(metric):
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        metric(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="at least one"):
        metric([], [])
    with pytest.raises(TypeError, match="not a single string"):
        metric("abc", "abc")
