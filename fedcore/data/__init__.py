"""Data for federated fine-tuning: a generated task (no downloads, deterministic by seed) and real
datasets and tokenizers read offline.

* :mod:`~fedcore.data.tokenizer` -- :class:`CharTokenizer`, a fixed 100-id character vocabulary.
* :mod:`~fedcore.data.tasks` -- :class:`Example` and :func:`make_instruction_task`, a generated
  six-skill instruction task (add, subtract, copy, reverse, sort, recall).
* :mod:`~fedcore.data.alpaca` -- read / write Alpaca-format JSONL as :class:`Example`.
* :mod:`~fedcore.data.partition` -- split item indices among clients: IID or Dirichlet label skew.
* :mod:`~fedcore.data.batching` -- prompt template, answer-only labels, padded int64 batches.
* :mod:`~fedcore.data.chat` -- :class:`ChatExample` conversations from Alpaca, chat and ShareGPT
  JSONL (:func:`load_jsonl`, malformed lines named by file and line), :func:`partition_labels`.
* :mod:`~fedcore.data.chat_encode` -- :func:`encode_chat`: answer-only labels for a conversation,
  with the tokenizer's chat template or the plain layout of :func:`encode_example`.
* :mod:`~fedcore.data.hf_tokenizer` -- :class:`HFTokenizer` around a ``transformers`` tokenizer;
  :func:`load_tokenizer` (folder, GGUF) and :func:`gpt2_tokenizer` (GPT-2's BPE, offline).
* :mod:`~fedcore.data.chatterbot` -- the chatterbot-corpus conversations as chat rows.

The real-data modules need ``fedcore[real]`` only when called; importing this package does not
import ``transformers``.
"""

from __future__ import annotations

from .alpaca import load_alpaca_jsonl, save_alpaca_jsonl
from .batching import IGNORE_INDEX, TokenizerLike, batches, collate, encode_example, format_prompt
from .chat import ChatExample, DataFileNotFoundError, LoadedRows, load_jsonl, partition_labels
from .chat_encode import EncodeStats, encode_chat, prompt_ids, reference
from .chatterbot import chatterbot_rows, write_chatterbot_jsonl
from .hf_tokenizer import HFTokenizer, gpt2_tokenizer, load_tokenizer
from .packages import MissingPackageError
from .partition import dirichlet_partition, iid_partition
from .tasks import INSTRUCTIONS, SKILLS, Example, make_instruction_task
from .tokenizer import CharTokenizer

__all__ = [
    "IGNORE_INDEX",
    "INSTRUCTIONS",
    "SKILLS",
    "CharTokenizer",
    "ChatExample",
    "DataFileNotFoundError",
    "EncodeStats",
    "Example",
    "HFTokenizer",
    "LoadedRows",
    "MissingPackageError",
    "TokenizerLike",
    "batches",
    "chatterbot_rows",
    "collate",
    "dirichlet_partition",
    "encode_chat",
    "encode_example",
    "format_prompt",
    "gpt2_tokenizer",
    "iid_partition",
    "load_alpaca_jsonl",
    "load_jsonl",
    "load_tokenizer",
    "make_instruction_task",
    "partition_labels",
    "prompt_ids",
    "reference",
    "save_alpaca_jsonl",
    "write_chatterbot_jsonl",
]
