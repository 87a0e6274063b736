"""h_A samples of the tiny default model: a shadow sample of client 0's training data and
client 1's held-out data, through a chosen head depth and release."""

from __future__ import annotations

import dataclasses

import pytest

from fedcore.algorithms.builders import tokenizer_of
from fedcore.algorithms.split.config import load_split_config
from fedcore.algorithms.split.leakage import client_release
from fedcore.algorithms.split.setup import build_client_data, build_split
from fedcore.data import batches
from fedcore.privacy import capture


def tiny_config(blocks_a: int = 1, *, std: float = 0.0, relative: bool = False, codec: str = "raw", **privacy):
    base = load_split_config(None)
    return dataclasses.replace(
        base,
        model=dataclasses.replace(base.model, hidden_size=64),
        split=dataclasses.replace(base.split, blocks_a=blocks_a),
        noise=dataclasses.replace(base.noise, std=std, relative=relative),
        codecs=dataclasses.replace(base.codecs, h_A=codec),
        privacy=dataclasses.replace(base.privacy, **privacy),
        data=dataclasses.replace(base.data, train_per_client=96, eval_per_client=24),
    )


def samples(config, shadow_examples: int = 96):
    """(head, shadow, victim): client 0's first training examples and client 1's held-out data."""
    tok = tokenizer_of(config.model)
    data = build_client_data(config, tok)
    head = build_split(config, tok).head.eval()
    rows = batches(data[0].train[:shadow_examples], 16, seed=0, pad_id=tok.pad_id, shuffle=False)
    shadow = capture(head, rows, release=client_release(config, 0, seed=1))
    victim = capture(head, data[1].eval_batches, release=client_release(config, 1, seed=2))
    return head, shadow, victim


@pytest.fixture(scope="session")
def embedding_only():
    return samples(tiny_config(0))
