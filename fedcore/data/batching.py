"""Turn examples into padded training batches for a causal LM.

Template: ``"{instruction}\\n{input}\\n{output}"`` (the input line is left out when ``input`` is
empty). An encoded example is ``input_ids = [bos] + prompt + output + [eos]`` (no ``bos`` for a
tokenizer without one) with ``labels`` equal to ``input_ids`` except ``-100`` over ``bos`` and the
prompt, so the loss trains only on the answer and ``eos``. Labels are *not* shifted: Hugging Face
causal LMs shift them inside ``forward``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Protocol

import torch

from .tasks import Example

IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default ignore_index
PADDING_SIDES = ("left", "right")

Encoded = tuple[list[int], list[int]]  # (input_ids, labels), equal lengths


class TokenizerLike(Protocol):
    """What :func:`encode_example` needs from a tokenizer (:class:`CharTokenizer` has it;
    :class:`~fedcore.data.hf_tokenizer.HFTokenizer` too). ``bos_id`` is ``None`` for a tokenizer
    without one: then nothing is put before the prompt."""

    @property
    def bos_id(self) -> int | None: ...

    @property
    def eos_id(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...


def format_prompt(ex: Example) -> str:
    """The prompt the answer follows: ``"{instruction}\\n{input}\\n"``, or ``"{instruction}\\n"``
    when ``ex.input`` is empty."""
    if ex.input:
        return f"{ex.instruction}\n{ex.input}\n"
    return f"{ex.instruction}\n"


def encode_example(tokenizer: TokenizerLike, ex: Example, *, max_len: int) -> Encoded:
    """``(input_ids, labels)`` for ``ex``, two int lists of the same length ``<= max_len``.

    When too long, the prompt loses tokens from its left (its start) until the example fits; the
    answer is never cut. Raises ``ValueError`` if ``max_len < 2`` or the answer plus ``eos``
    alone is longer than ``max_len - 1`` (no room for ``bos``; ``max_len`` for a tokenizer whose
    ``bos_id`` is ``None``, which gets no ``bos``).
    """
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 2:
        raise ValueError(f"max_len must be an int >= 2, got {max_len!r}")
    head = [] if tokenizer.bos_id is None else [tokenizer.bos_id]
    prompt = tokenizer.encode(format_prompt(ex))
    answer = tokenizer.encode(ex.output) + [tokenizer.eos_id]
    room = max_len - len(head) - len(answer)  # tokens left for the prompt after bos and the answer
    if room < 0:
        raise ValueError(
            f"the answer plus eos is {len(answer)} tokens, more than max_len - {len(head)} = {max_len - len(head)}; "
            "raise max_len or shorten the output"
        )
    prompt = prompt[len(prompt) - room :] if len(prompt) > room else prompt
    input_ids = [*head, *prompt, *answer]
    labels = [IGNORE_INDEX] * (len(head) + len(prompt)) + answer
    assert len(input_ids) == len(labels) <= max_len
    return input_ids, labels


def collate(encoded: Sequence[Encoded], *, pad_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Pad a list of ``(input_ids, labels)`` into a batch of CPU int64 tensors.

    Returns ``"input_ids"`` (B, T) padded with ``pad_id``, ``"attention_mask"`` (B, T) with 1 on
    real tokens and 0 on padding, and ``"labels"`` (B, T) with ``-100`` on padding; T is the
    longest sequence. ``padding_side="left"`` puts the padding first (for generation). Raises
    ``ValueError`` for an empty batch, an empty or mismatched pair, or another padding side.
    """
    if padding_side not in PADDING_SIDES:
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if len(encoded) == 0:
        raise ValueError("collate needs at least one encoded example")
    for i, (ids, labels) in enumerate(encoded):
        if len(ids) == 0 or len(ids) != len(labels):
            raise ValueError(
                f"example {i}: input_ids ({len(ids)}) and labels ({len(labels)}) must be "
                "non-empty and of equal length; build them with encode_example"
            )
    batch, width = len(encoded), max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.int64)
    attention_mask = torch.zeros((batch, width), dtype=torch.int64)
    labels_t = torch.full((batch, width), IGNORE_INDEX, dtype=torch.int64)
    for row, (ids, labels) in enumerate(encoded):
        cols = slice(0, len(ids)) if padding_side == "right" else slice(width - len(ids), width)
        input_ids[row, cols] = torch.tensor(ids, dtype=torch.int64)
        labels_t[row, cols] = torch.tensor(labels, dtype=torch.int64)
        attention_mask[row, cols] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels_t}


def batches(
    encoded: Sequence[Encoded],
    batch_size: int,
    *,
    seed: int,
    pad_id: int,
    shuffle: bool = True,
    drop_last: bool = False,
    padding_side: str = "right",
) -> Iterator[dict[str, torch.Tensor]]:
    """One pass over ``encoded`` as :func:`collate` batches of ``batch_size`` examples.

    With ``shuffle`` the order comes from ``random.Random(seed)``, so the same seed gives the same
    batches; otherwise examples keep their order. The last batch is smaller unless ``drop_last``.
    Arguments are checked now, not at the first ``next``: ``ValueError`` for ``batch_size < 1``
    or a bad ``padding_side``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if padding_side not in PADDING_SIDES:
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    order = list(range(len(encoded)))
    if shuffle:
        random.Random(seed).shuffle(order)
    stop = len(order) - len(order) % batch_size if drop_last else len(order)

    def _gen() -> Iterator[dict[str, torch.Tensor]]:
        for start in range(0, stop, batch_size):
            chunk = [encoded[i] for i in order[start : start + batch_size]]
            yield collate(chunk, pad_id=pad_id, padding_side=padding_side)

    return _gen()
