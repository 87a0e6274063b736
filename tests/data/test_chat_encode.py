"""encode_chat: labels cover exactly the last answer and its end marker, for the character
tokenizer, GPT-2's BPE, a BPE trained here (no bos) and SmolLM2's tokenizer with its chat template;
truncation and drop counts; prompt_ids; the plain layout equals encode_example's."""

from __future__ import annotations

import pytest

from fedcore.data import (
    IGNORE_INDEX,
    CharTokenizer,
    ChatExample,
    EncodeStats,
    Example,
    HFTokenizer,
    encode_chat,
    encode_example,
    gpt2_tokenizer,
    prompt_ids,
    reference,
)

SINGLE = ChatExample((("user", "What is the capital of France?"), ("assistant", "Paris, on the Seine.")), {})
MULTI = ChatExample(
    (
        ("system", "Answer briefly."),
        ("user", "hello there"),
        ("assistant", "hello, the quick fox"),
        ("user", "what jumps over the lazy dog?"),
        ("assistant", "the quick brown fox"),
    ),
    {"category": "animals"},
)


@pytest.fixture(scope="module")
def gpt2() -> HFTokenizer:
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def bpe(train_bpe, tmp_path_factory) -> HFTokenizer:
    return train_bpe(tmp_path_factory.mktemp("bpe"))


def labelled(tok, ids: list[int], labels: list[int]) -> str:
    """The labelled span as text (special tokens shown), after checking it is one block at the end
    whose labels equal the ids."""
    start = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    assert all(label == IGNORE_INDEX for label in labels[:start])
    assert labels[start:] == ids[start:]
    return tok.decode(ids[start:], skip_special=False)


def check_plain(tok, end: str) -> None:
    for ex in (SINGLE, MULTI):
        ids, labels = encode_chat(tok, ex, max_len=512)
        assert len(ids) == len(labels)
        assert labelled(tok, ids, labels) == reference(ex) + end
        assert ids[: len(prompt_ids(tok, ex))] == prompt_ids(tok, ex)
        first = tok.bos_id if tok.bos_id is not None else prompt_ids(tok, ex)[0]  # no bos: the prompt starts
        assert ids[0] == first


def test_char_tokenizer_plain_layout():
    tok = CharTokenizer()
    check_plain(tok, "<eos>")
    ids, _ = encode_chat(tok, MULTI, max_len=512)
    expected = "system: Answer briefly.\nuser: hello there\nassistant: hello, the quick fox\n"
    assert tok.decode(ids) == expected + "what jumps over the lazy dog?\nthe quick brown fox"


def test_gpt2_plain_layout(gpt2):
    check_plain(gpt2, "<|endoftext|>")


def test_trained_bpe_without_bos(bpe):
    assert bpe.bos_id is None
    check_plain(bpe, "[EOS]")
    ids, _ = encode_chat(bpe, SINGLE, max_len=512)
    assert bpe.decode(ids) == "What is the capital of France?\nParis, on the Seine."


@pytest.mark.parametrize("tokenizer", ["char", "gpt2", "bpe"])
def test_plain_layout_equals_encode_example(tokenizer, gpt2, bpe, seed):
    from fedcore.data import make_instruction_task

    tok = {"char": CharTokenizer(), "gpt2": gpt2, "bpe": bpe}[tokenizer]
    examples = make_instruction_task(30, seed=seed)
    for ex in [e for e in examples if not e.input] + [Example("Say hi.", "", "hi", "greet")]:
        chat = ChatExample((("user", ex.instruction), ("assistant", ex.output)), {})
        for max_len in (64, 8):
            assert encode_chat(tok, chat, max_len=max_len) == encode_example(tok, ex, max_len=max_len)


def test_truncation_and_drop_counts():
    tok = CharTokenizer()
    stats = EncodeStats()
    full = encode_chat(tok, SINGLE, max_len=512, stats=stats)
    assert full is not None and stats == EncodeStats(kept=1)
    answer = len(reference(SINGLE)) + 1  # characters + eos
    ids, labels = encode_chat(tok, SINGLE, max_len=answer + 6, stats=stats)
    assert len(ids) == answer + 6 and ids[0] == tok.bos_id
    assert tok.decode(ids) == "nce?\n" + reference(SINGLE)  # the prompt lost its start; bos stays
    assert labelled(tok, ids, labels) == reference(SINGLE) + "<eos>"
    assert stats == EncodeStats(kept=2, truncated=1)
    assert encode_chat(tok, SINGLE, max_len=answer + 1, stats=stats) is not None  # bos + answer
    assert encode_chat(tok, SINGLE, max_len=answer, stats=stats) is None  # no room for bos
    assert stats == EncodeStats(kept=3, truncated=2, dropped=1)
    assert encode_chat(tok, SINGLE, max_len=answer) is None  # without stats: still None
    for bad in (1, 2.0, True):
        with pytest.raises(ValueError, match="max_len must be an int >= 2"):
            encode_chat(tok, SINGLE, max_len=bad)  # type: ignore[arg-type]


def test_no_bos_truncation_uses_every_position(bpe):
    answer = len(bpe.encode(reference(SINGLE))) + 1
    stats = EncodeStats()
    assert len(encode_chat(bpe, SINGLE, max_len=answer, stats=stats)[0]) == answer
    assert encode_chat(bpe, SINGLE, max_len=answer - 1, stats=stats) is None
    assert stats == EncodeStats(kept=1, truncated=1, dropped=1)
    ids, labels = encode_example(bpe, Example("what is", "", "the fox", "x"), max_len=64)
    assert None not in ids and ids[-1] == bpe.eos_id and labels[0] == IGNORE_INDEX


SIMPLE_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}:\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:\n{% endif %}"
)
# the prompt's "ASSISTANT" header differs from the full rendering's: not a token prefix
MISMATCHED_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}[EOS]{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT: {% endif %}"
)


def test_template_without_special_end_gets_eos(train_bpe, tmp_path):
    tok = train_bpe(tmp_path)
    tok.hf.chat_template = SIMPLE_TEMPLATE
    ids, labels = encode_chat(tok, MULTI, max_len=512)
    assert labelled(tok, ids, labels) == "the quick brown fox\n[EOS]"
    assert tok.decode(prompt_ids(tok, MULTI)).endswith("what jumps over the lazy dog?\nassistant:\n")


def test_template_fallback_when_prompt_is_not_a_prefix(train_bpe, tmp_path):
    tok = train_bpe(tmp_path)
    tok.hf.chat_template = MISMATCHED_TEMPLATE
    ids, labels = encode_chat(tok, SINGLE, max_len=512)
    assert labelled(tok, ids, labels) == reference(SINGLE) + "[EOS]"
    assert tok.decode(ids[: len(prompt_ids(tok, SINGLE))], skip_special=False).endswith("[EOS]ASSISTANT: ")


def test_template_that_refuses_the_conversation(train_bpe, tmp_path):
    tok = train_bpe(tmp_path)
    tok.hf.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system turns') }}{% endif %}"
        "{{ m['content'] }}[EOS]{% endfor %}"
    )
    assert encode_chat(tok, SINGLE, max_len=64) is not None
    with pytest.raises(ValueError, match="chat template cannot render the conversation .*no system turns"):
        encode_chat(tok, MULTI, max_len=64)


@pytest.mark.slow
def test_smollm2_chat_template(smollm2_tokenizer):
    tok = smollm2_tokenizer
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    for ex in (SINGLE, MULTI):
        ids, labels = encode_chat(tok, ex, max_len=512)
        assert labelled(tok, ids, labels) == reference(ex) + "<|im_end|>"
        prompt = prompt_ids(tok, ex)
        assert ids[: len(prompt)] == prompt and len(ids) == len(prompt) + len(tok.encode(reference(ex))) + 1
        text = tok.decode(prompt, skip_special=False)
        assert text.endswith("<|im_start|>assistant\n") and text.startswith("<|im_start|>system\n")
    rendered = tok.decode(encode_chat(tok, MULTI, max_len=512)[0], skip_special=False)
    # the earlier answer is context, in the template's own markup
    assert "<|im_start|>assistant\nhello, the quick fox<|im_end|>\n<|im_start|>user\n" in rendered
    assert "Answer briefly." in rendered and "SmolLM" not in rendered  # the row's system turn replaces the default


@pytest.mark.slow
def test_smollm2_truncation_cuts_the_prompt_from_the_left(smollm2_tokenizer):
    tok = smollm2_tokenizer
    stats = EncodeStats()
    answer = len(tok.encode(reference(SINGLE))) + 1
    ids, labels = encode_chat(tok, SINGLE, max_len=answer + 4, stats=stats)
    assert len(ids) == answer + 4
    assert ids[:4] == prompt_ids(tok, SINGLE)[-4:]  # the end of "<|im_start|>assistant\n" is kept
    assert labelled(tok, ids, labels) == reference(SINGLE) + "<|im_end|>"
    assert encode_chat(tok, SINGLE, max_len=answer - 1, stats=stats) is None
    assert stats == EncodeStats(kept=1, truncated=1, dropped=1)
