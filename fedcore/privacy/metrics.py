"""How much of the text an attack read back: token recovery, ROUGE-1/2/L (``rouge-score``) and
BLEU-4 (``sacrebleu``), on the scale FL-GLM's Table 4 uses (percent)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .capture import HiddenSample


def token_recovery(predicted: torch.Tensor, sample: HiddenSample) -> float:
    """Fraction in [0, 1] of the sample's real tokens whose id ``predicted`` (N, T) got right."""
    if predicted.shape != sample.ids.shape:
        raise ValueError(f"predicted ids {tuple(predicted.shape)} do not match the sample's {tuple(sample.ids.shape)}")
    hits = (predicted == sample.ids) & sample.mask
    return float(hits.sum()) / max(sample.tokens, 1)


def texts(ids: torch.Tensor, mask: torch.Tensor, decode: Callable[[list[int]], str]) -> list[str]:
    """Each sequence's real tokens decoded to text."""
    return [decode(row[m].tolist()) for row, m in zip(ids, mask, strict=True)]


def text_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """ROUGE-1, ROUGE-2, ROUGE-L (mean F1 over the pairs, rouge-score's tokenizer, no stemming)
    and corpus BLEU-4 (sacrebleu's defaults: 13a tokenization, exponential smoothing), all
    times 100."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references; pass one per reference")
    try:
        import sacrebleu
        from rouge_score import rouge_scorer
    except ImportError as err:
        raise ImportError("text leakage scores need rouge-score and sacrebleu: pip install 'fedcore[privacy]'") from err
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    sums = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for pred, ref in zip(predictions, references, strict=True):
        for key, score in scorer.score(ref, pred).items():
            sums[key] += score.fmeasure
    out = {f"{k.replace('rouge', 'rouge_').lower()}": 100 * v / len(predictions) for k, v in sums.items()}
    out["bleu_4"] = float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)
    return out


def leakage_scores(
    predicted: torch.Tensor, sample: HiddenSample, decode: Callable[[list[int]], str]
) -> dict[str, float]:
    """``token_recovery`` (percent) and ``text_scores`` of the decoded predictions."""
    scores = {"token_recovery": 100 * token_recovery(predicted, sample)}
    scores.update(text_scores(texts(predicted, sample.mask, decode), texts(sample.ids, sample.mask, decode)))
    return scores
