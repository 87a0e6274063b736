"""Data for federated fine-tuning demos: no downloads, deterministic by seed.

* :mod:`~fedcore.data.tokenizer` -- :class:`CharTokenizer`, a fixed 100-id character vocabulary.
* :mod:`~fedcore.data.tasks` -- :class:`Example` and :func:`make_instruction_task`, a generated
  six-skill instruction task (add, subtract, copy, reverse, sort, recall).
* :mod:`~fedcore.data.alpaca` -- read / write Alpaca-format JSONL.
* :mod:`~fedcore.data.partition` -- split item indices among clients: IID or Dirichlet label skew.
* :mod:`~fedcore.data.batching` -- prompt template, answer-only labels, padded int64 batches.
"""

from __future__ import annotations

from .alpaca import load_alpaca_jsonl, save_alpaca_jsonl
from .batching import IGNORE_INDEX, batches, collate, encode_example, format_prompt
from .partition import dirichlet_partition, iid_partition
from .tasks import INSTRUCTIONS, SKILLS, Example, make_instruction_task
from .tokenizer import CharTokenizer

__all__ = [
    "IGNORE_INDEX",
    "INSTRUCTIONS",
    "SKILLS",
    "CharTokenizer",
    "Example",
    "batches",
    "collate",
    "dirichlet_partition",
    "encode_example",
    "format_prompt",
    "iid_partition",
    "load_alpaca_jsonl",
    "make_instruction_task",
    "save_alpaca_jsonl",
]
