"""Text metrics for generated answers: ROUGE-L F1 and SQuAD-style exact match.

Both take parallel sequences of predictions and references and return a mean in [0, 1].
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import Any

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("pass sequences of strings (a list per side), not a single string")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references; pass one per reference")
    if not predictions:
        raise ValueError("no predictions to score; pass at least one (prediction, reference) pair")


def _rouge_scorer() -> Any:
    try:
        from rouge_score import rouge_scorer
    except ImportError as err:
        raise ImportError("rouge_l needs the rouge-score package: pip install rouge-score") from err
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F1 in [0, 1] over the pairs, as ``rouge_score`` computes it.

    Tokens are lowercased ASCII alphanumeric runs, Porter-stemmed; F1 is the harmonic mean of
    LCS / len(prediction) and LCS / len(reference). A pair where either side has no tokens
    scores 0. Raises ``ValueError`` for unequal lengths or no pairs.
    """
    _check_pairs(predictions, references)
    scorer = _rouge_scorer()
    total = sum(scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references, strict=True))
    return float(total / len(predictions))


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lowercase, drop punctuation and the articles a/an/the, collapse
    whitespace."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Fraction of pairs whose ``normalize_answer`` forms are equal, in [0, 1].

    Raises ``ValueError`` for unequal lengths or no pairs.
    """
    _check_pairs(predictions, references)
    hits = sum(normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references, strict=True))
    return hits / len(predictions)
