"""CharTokenizer: fixed vocabulary, special tokens, unknown characters, round trip."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcore.data import CharTokenizer

PRINTABLE = "".join(chr(c) for c in range(32, 127)) + "\n"


@pytest.fixture(scope="module")
def tok() -> CharTokenizer:
    return CharTokenizer()


def test_vocabulary_layout(tok):
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    assert tok.vocab_size == 4 + 95 + 1
    ids = tok.encode(PRINTABLE)
    assert len(ids) == len(PRINTABLE)
    assert len(set(ids)) == len(ids), "two characters share an id"
    assert min(ids) == 4 and max(ids) == tok.vocab_size - 1
    assert tok.encode(" ") == [4] and tok.encode("~") == [98] and tok.encode("\n") == [99]


def test_two_instances_agree(tok):
    assert CharTokenizer().encode(PRINTABLE) == tok.encode(PRINTABLE)


def test_bos_eos_flags(tok):
    body = tok.encode("ab")
    assert tok.encode("ab", add_bos=True) == [tok.bos_id, *body]
    assert tok.encode("ab", add_eos=True) == [*body, tok.eos_id]
    assert tok.encode("ab", add_bos=True, add_eos=True) == [tok.bos_id, *body, tok.eos_id]
    assert tok.encode("", add_bos=True, add_eos=True) == [tok.bos_id, tok.eos_id]


def test_unknown_characters_map_to_unk(tok):
    ids = tok.encode("a\té€b")
    assert ids[1:4] == [tok.unk_id] * 3
    assert ids[0] == tok.encode("a")[0] and ids[4] == tok.encode("b")[0]
    assert tok.decode(ids) == "ab"
    assert tok.decode(ids, skip_special=False) == "a<unk><unk><unk>b"


def test_decode_special_tokens(tok):
    ids = tok.encode("hi", add_bos=True, add_eos=True) + [tok.pad_id, tok.pad_id]
    assert tok.decode(ids) == "hi"
    assert tok.decode(ids, skip_special=False) == "<bos>hi<eos><pad><pad>"


def test_decode_accepts_a_tensor(tok):
    ids = torch.tensor(tok.encode("x = 1\n", add_eos=True), dtype=torch.int64)
    assert tok.decode(ids) == "x = 1\n"


@pytest.mark.parametrize("bad", [-1, 100, 10**6])
def test_decode_rejects_out_of_range_ids(tok, bad):
    with pytest.raises(ValueError, match="outside"):
        tok.decode([5, bad])


def test_encode_rejects_non_str(tok):
    with pytest.raises(TypeError, match="str"):
        tok.encode(b"abc")  # type: ignore[arg-type]


@settings(max_examples=50, deadline=None, database=None)
@given(st.text(alphabet=st.sampled_from(PRINTABLE), max_size=200))
def test_round_trip_printable_ascii(text):
    tok = CharTokenizer()
    ids = tok.encode(text, add_bos=True, add_eos=True)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.unk_id not in ids
    assert tok.decode(ids) == text
    assert tok.decode(tok.encode(text)) == text
