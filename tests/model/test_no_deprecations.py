"""fedcore's split calls transformers through its current API: a split forward and split generation
raise no FutureWarning or DeprecationWarning of fedcore's making (transformers 5.24 deprecated the
``past_key_values`` keyword of mask builders and decoder layers for ``cache``; 5.17 has only the old
name, so fedcore asks each callee's signature)."""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings

import pytest
import torch

from fedcore.model import split_generate, split_model
from fedcore.model.tiny import tiny_causal_lm

from ..conftest import LogRecords

CASES = {
    "llama": ("llama", {}),
    "llama-eager": ("llama", dict(attn_implementation="eager")),
    "qwen2-mixed-window": ("qwen2", dict(use_sliding_window=True, sliding_window=3, max_window_layers=2)),
    "mistral-window": ("mistral", dict(sliding_window=3)),
    "gpt2": ("gpt2", {}),
    "gemma2": ("gemma2", {}),
    "gemma3": ("gemma3", {}),
    "gpt_neox": ("gpt_neox", {}),
    "falcon-new-arch": ("falcon", dict(new_decoder_architecture=True)),
    "falcon-alibi": ("falcon", dict(alibi=True)),
}

# fedcore's source folders: fedcore/, and kernels/ and transport/ (fedcore.kernels / fedcore.transport)
SOURCE_DIRS = tuple(
    os.path.dirname(os.path.realpath(spec.origin)) + os.sep
    for spec in map(importlib.util.find_spec, ("fedcore", "fedcore.kernels", "fedcore.transport"))
    if spec is not None and spec.origin
)
# transformers attributes a deprecated keyword of a decoder layer to its checkpointing wrapper (the
# ``stacklevel`` stops there), not to the caller; in this test only fedcore's parts call the layers
FORWARDERS = (os.path.join("transformers", "modeling_layers.py"), os.path.join("torch", "nn", "modules", "module.py"))


def _ours(w: warnings.WarningMessage) -> bool:
    path = os.path.realpath(w.filename)
    return path.startswith(SOURCE_DIRS) or path.endswith(FORWARDERS)


@pytest.mark.parametrize("case", list(CASES))
def test_split_forward_and_generation_raise_no_deprecation_from_fedcore(case):
    family, overrides = CASES[case]
    model = tiny_causal_lm(family, num_layers=4, seed=0, **overrides)
    sm = split_model(model, 1, 1)
    ids = torch.randint(3, 128, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    ids = ids.masked_fill(mask == 0, 0)
    labels = ids.masked_fill(mask == 0, -100)

    # transformers' notices for the renamed output field go to its logger, each once per process
    warning_once = getattr(logging.Logger, "warning_once", None)
    if hasattr(warning_once, "cache_clear"):
        warning_once.cache_clear()  # type: ignore[union-attr]
    records = LogRecords()
    logger = logging.getLogger("transformers")
    logger.addHandler(records)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = sm.tail(sm.body(sm.head(ids, mask)), labels=labels)
            out.loss.backward()
            head, body, tail = sm.new_caches()
            h_b = sm.body(sm.head(ids, mask, cache=head), cache=body)
            cached = sm.tail(h_b, cache=tail)
            tokens = split_generate(sm, ids, mask, max_new_tokens=4, eos_token_id=2, pad_token_id=0)
    finally:
        logger.removeHandler(records)

    assert tokens.shape[1] > ids.shape[1] and torch.isfinite(out.loss)
    # each part's layers got its cache under the name they take (a misnamed one would be swallowed)
    assert head.get_seq_length(0) == body.get_seq_length(1) == tail.get_seq_length(3) == ids.shape[1]
    assert any(v is tail for v in cached.values())  # the tail's output holds its cache
    deprecations = [w for w in caught if issubclass(w.category, FutureWarning | DeprecationWarning)]
    ours = [f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}" for w in deprecations if _ours(w)]
    assert not ours, "\n".join(ours)
    assert not [m for m in records.messages if "deprecated" in m], records.messages
