"""format_prompt / encode_example / collate / batches against a hand-written reference."""

from __future__ import annotations

import pytest
import torch

from fedcore.data import (
    IGNORE_INDEX,
    CharTokenizer,
    Example,
    batches,
    collate,
    encode_example,
    format_prompt,
    make_instruction_task,
)

TOK = CharTokenizer()


def test_format_prompt():
    assert format_prompt(Example("Add the numbers.", "1 + 2", "3", "add")) == ("Add the numbers.\n1 + 2\n")
    assert format_prompt(Example("Say hi.", "", "hi", "unknown")) == "Say hi.\n"


def test_encode_example_reference(seed):
    for ex in make_instruction_task(200, seed=seed):
        ids, labels = encode_example(TOK, ex, max_len=64)
        prompt, answer = TOK.encode(format_prompt(ex)), TOK.encode(ex.output)
        assert ids == [TOK.bos_id, *prompt, *answer, TOK.eos_id]
        assert labels == [IGNORE_INDEX] * (1 + len(prompt)) + [*answer, TOK.eos_id]
        assert TOK.decode(ids) == format_prompt(ex) + ex.output


def test_truncation_drops_the_prompt_start_only():
    ex = Example("Reverse the word.", "abcdef", "fedcba", "reverse")
    full_ids, _ = encode_example(TOK, ex, max_len=1000)
    answer = TOK.encode("fedcba") + [TOK.eos_id]
    for max_len in range(len(answer) + 1, len(full_ids) + 1):
        ids, labels = encode_example(TOK, ex, max_len=max_len)
        assert len(ids) == len(labels) == max_len
        assert ids[0] == TOK.bos_id
        assert ids[-len(answer) :] == answer and labels[-len(answer) :] == answer
        assert labels[: -len(answer)] == [IGNORE_INDEX] * (max_len - len(answer))
        kept = ids[1 : -len(answer)]
        assert full_ids[len(full_ids) - len(ids) + 1 : -len(answer)] == kept  # a suffix
    assert encode_example(TOK, ex, max_len=len(answer) + 1)[0] == [TOK.bos_id, *answer]


def test_answer_too_long_raises():
    ex = Example("Copy the word.", "abcd", "abcd", "copy")
    with pytest.raises(ValueError, match="answer plus eos is 5 tokens"):
        encode_example(TOK, ex, max_len=5)
    with pytest.raises(ValueError, match="max_len"):
        encode_example(TOK, ex, max_len=1)


def _reference_pad(encoded, pad_id, side):
    width = max(len(ids) for ids, _ in encoded)
    out = {"input_ids": [], "attention_mask": [], "labels": []}

    def pad(seq: list[int], value: int) -> list[int]:
        fill = [value] * (width - len(seq))
        return seq + fill if side == "right" else fill + seq

    for ids, labels in encoded:
        out["input_ids"].append(pad(ids, pad_id))
        out["attention_mask"].append(pad([1] * len(ids), 0))
        out["labels"].append(pad(labels, IGNORE_INDEX))
    return {k: torch.tensor(v, dtype=torch.int64) for k, v in out.items()}


@pytest.mark.parametrize("side", ["right", "left"])
def test_collate_matches_reference(seed, side):
    encoded = [encode_example(TOK, ex, max_len=64) for ex in make_instruction_task(7, seed=seed)]
    batch = collate(encoded, pad_id=TOK.pad_id, padding_side=side)
    ref = _reference_pad(encoded, TOK.pad_id, side)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    width = max(len(ids) for ids, _ in encoded)
    for key, tensor in batch.items():
        assert tensor.shape == (7, width) and tensor.dtype == torch.int64, key
        assert torch.equal(tensor, ref[key]), key
    assert torch.equal(batch["attention_mask"].sum(1), torch.tensor([len(i) for i, _ in encoded]))


def test_collate_rejects_bad_input():
    pair = encode_example(TOK, Example("I", "", "o", "x"), max_len=16)
    with pytest.raises(ValueError, match="padding_side"):
        collate([pair], pad_id=0, padding_side="middle")
    with pytest.raises(ValueError, match="at least one"):
        collate([], pad_id=0)
    with pytest.raises(ValueError, match="equal length"):
        collate([([1, 2, 3], [1, 2])], pad_id=0)


def _encoded(n):
    return [([TOK.bos_id] * (1 + i % 5), [IGNORE_INDEX] * (1 + i % 5)) for i in range(n)]


def _rows(batch_list):
    # _encoded(n) tells its examples apart by length: the rows' lengths, batch by batch
    return [batch["attention_mask"].sum(1).tolist() for batch in batch_list]


def test_batches_are_seeded_and_cover_everything(seed):
    encoded = [encode_example(TOK, ex, max_len=64) for ex in make_instruction_task(23, seed=seed)]
    a = list(batches(encoded, 5, seed=seed, pad_id=TOK.pad_id))
    b = list(batches(encoded, 5, seed=seed, pad_id=TOK.pad_id))
    c = list(batches(encoded, 5, seed=seed + 1, pad_id=TOK.pad_id))
    assert [len(x["input_ids"]) for x in a] == [5, 5, 5, 5, 3]
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in x)
    seen = sorted(TOK.decode(row) for x in a for row in x["input_ids"])
    assert seen == sorted(TOK.decode(ids) for ids, _ in encoded)
    order = [TOK.decode(row) for x in a for row in x["input_ids"]]
    assert order != [TOK.decode(row) for x in c for row in x["input_ids"]]


def test_batches_without_shuffle_keep_order_and_drop_last():
    encoded = _encoded(11)
    kept = list(batches(encoded, 4, seed=0, pad_id=0, shuffle=False))
    assert _rows(kept) == [[1, 2, 3, 4], [5, 1, 2, 3], [4, 5, 1]]
    dropped = list(batches(encoded, 4, seed=0, pad_id=0, shuffle=False, drop_last=True))
    assert _rows(dropped) == [[1, 2, 3, 4], [5, 1, 2, 3]]
    assert list(batches(encoded[:3], 4, seed=0, pad_id=0, drop_last=True)) == []


def test_batches_left_padding():
    (batch,) = batches(_encoded(3), 3, seed=0, pad_id=0, shuffle=False, padding_side="left")
    assert batch["attention_mask"].tolist() == [[0, 0, 1], [0, 1, 1], [1, 1, 1]]


@pytest.mark.parametrize("bad", [0, -2, 1.5])
def test_batches_checks_arguments_eagerly(bad):
    with pytest.raises(ValueError, match="batch_size"):
        batches(_encoded(4), bad, seed=0, pad_id=0)
    with pytest.raises(ValueError, match="padding_side"):
        batches(_encoded(4), 2, seed=0, pad_id=0, padding_side="up")
