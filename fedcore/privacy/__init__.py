"""What the server can read from what crosses the split, and a formally private option for h_A.

- ``capture``: token ids beside the h_A the server received (``HiddenSample``).
- ``attacks``: inverters fitted on shadow data (nearest row, ridge, linear, one-block
  transformer, weight match).
- ``metrics``: token recovery, ROUGE-1/2/L, BLEU-4.
- ``mechanism``: per-token / per-example L2 clipping, the Gaussian mechanism in torch.
- ``accountant``: (epsilon, delta) of the run's h_A releases by dp-accounting.
The end-of-run leakage check of split runs is ``fedcore.algorithms.split.leakage``; the study
(``fedcore privacy X.toml``) is ``fedcore.runtime.privacy_study`` (this layer sits below both).
"""

from .accountant import Guarantee, epoch_releases, gaussian_epsilon, guarantee
from .attacks import LinearInverter, NearestRow, RidgeInverter, TransformerInverter, WeightMatch
from .capture import HiddenSample, capture
from .mechanism import check_clip, clip_examples, clip_hidden, clip_tokens, gaussian_mechanism
from .metrics import leakage_scores, text_scores, token_recovery

__all__ = [
    "Guarantee",
    "HiddenSample",
    "LinearInverter",
    "NearestRow",
    "RidgeInverter",
    "TransformerInverter",
    "WeightMatch",
    "capture",
    "check_clip",
    "clip_examples",
    "clip_hidden",
    "clip_tokens",
    "epoch_releases",
    "gaussian_epsilon",
    "gaussian_mechanism",
    "guarantee",
    "leakage_scores",
    "text_scores",
    "token_recovery",
]
