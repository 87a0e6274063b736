"""Real on-disk assets for the end-to-end tests: tiny random checkpoints saved with
``save_pretrained`` next to a BPE tokenizer trained by the ``tokenizers`` library, and a small
Alpaca JSONL file with a ``category`` per row."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from fedcore.model.tiny import tiny_causal_lm

QA = [
    ("geo", "What is the capital of France?", "Paris is the capital of France."),
    ("bio", "How many legs does a spider have?", "A spider has eight legs."),
    ("lit", "Who wrote Hamlet?", "William Shakespeare wrote Hamlet."),
    ("sky", "What colour is the sky?", "The sky is blue on a clear day."),
]


def train_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    """A byte-level BPE of 300 ids trained on the Q/A lines, saved into ``folder``."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([f"{q} {a}" for _, q, a in QA] * 8, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(folder)
    return fast


def save_checkpoint(folder: Path, family: str) -> Path:
    """A 4-layer random ``family`` model (hidden 64) and its tokenizer in ``folder``."""
    fast = train_tokenizer(folder)
    model = tiny_causal_lm(family, vocab_size=len(fast), hidden_size=64, num_layers=4, initializer_range=0.1)
    model.save_pretrained(folder)
    return folder


def write_qa_jsonl(path: Path, rows: int = 96) -> Path:
    """``rows`` Alpaca rows cycling through the four Q/A pairs, ``category`` their topic."""
    lines = []
    for i in range(rows):
        category, question, answer = QA[i % len(QA)]
        lines.append(json.dumps({"instruction": question, "input": "", "output": answer, "category": category}))
    path.write_text("\n".join(lines) + "\n")
    return path
