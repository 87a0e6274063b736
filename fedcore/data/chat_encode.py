"""Encode a :class:`~fedcore.data.chat.ChatExample` for a causal LM: the loss covers only the
last assistant turn (the answer) and the marker that ends it.

Two layouts:

* **Chat template** (``tokenizer.chat_template`` is set, e.g. SmolLM2's ChatML): the conversation
  as the template renders it. The prompt is the template's rendering of every turn before the
  answer with ``add_generation_prompt=True``; when its tokens are a prefix of the full rendering's,
  the answer is the rest of the full rendering up to and including its first special token (the
  end-of-turn marker, ``<|im_end|>`` for ChatML); what the template puts after it (a ``"\\n"``) is
  left out. If the prefix check fails (a template that renders history differently), the
  prompt's tokens are followed by the answer's own tokens and ``eos``.
* **Plain** (no template: :class:`~fedcore.data.tokenizer.CharTokenizer`, GPT-2):
  ``[bos] + prompt + answer + [eos]`` as :func:`~fedcore.data.batching.encode_example` lays it
  out (``bos`` left out when the tokenizer has none). The prompt is one ``"{role}: {content}\\n"``
  line per turn before the answer, except that the last one, when it is a user turn, is its bare
  ``"{content}\\n"``; a single user turn is therefore ``"{content}\\n"``, and an Alpaca row without
  ``input`` encodes exactly as ``encode_example`` encodes it.

Earlier assistant turns are context (labels ``-100``): each example trains one answer. Labels are
not shifted (Hugging Face causal LMs shift them inside ``forward``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .batching import IGNORE_INDEX, Encoded, TokenizerLike
from .chat import ChatExample


@dataclass
class EncodeStats:
    """What :func:`encode_chat` did to the examples it was given (counts, added to in place)."""

    kept: int = 0
    truncated: int = 0  # prompt cut from the left to fit max_len
    dropped: int = 0  # answer alone did not fit: example left out


def reference(ex: ChatExample) -> str:
    """The last assistant turn's content: the answer generation is compared with."""
    return ex.messages[-1][1]


def _template(tokenizer: TokenizerLike) -> Any:
    """The tokenizer's ``apply_chat_template`` when it has a chat template, else ``None``."""
    if getattr(tokenizer, "chat_template", None):
        return getattr(tokenizer, "apply_chat_template", None)
    return None


def _dicts(turns: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in turns]


def _render(tokenizer: TokenizerLike, turns: tuple[tuple[str, str], ...], **kwargs: Any) -> list[int]:
    """The chat template's rendering of ``turns``, tokenized; ``ValueError`` when the template
    refuses the conversation (e.g. one that insists on alternating user / assistant turns)."""
    from jinja2 import TemplateError  # chat templates are Jinja; transformers needs jinja2 for them

    try:
        text = _template(tokenizer)(_dicts(turns), tokenize=False, **kwargs)
    except TemplateError as err:
        raise ValueError(f"the tokenizer's chat template cannot render the conversation {turns!r:.80}: {err}") from err
    assert isinstance(text, str), f"apply_chat_template(tokenize=False) returned {type(text).__name__}"
    return tokenizer.encode(text)


def _plain_prompt(turns: tuple[tuple[str, str], ...]) -> str:
    lines = [f"{role}: {content}" for role, content in turns]
    if turns[-1][0] == "user":
        lines[-1] = turns[-1][1]  # the question itself, as format_prompt writes it
    return "".join(f"{line}\n" for line in lines)


def _head(tokenizer: TokenizerLike) -> list[int]:
    return [] if tokenizer.bos_id is None else [tokenizer.bos_id]


def prompt_ids(tokenizer: TokenizerLike, ex: ChatExample) -> list[int]:
    """Token ids of everything before the last assistant turn, ready for generation: the chat
    template's rendering with ``add_generation_prompt=True``, else ``[bos] + plain prompt`` (see
    the module docstring). Not truncated."""
    if _template(tokenizer) is not None:
        return _render(tokenizer, ex.messages[:-1], add_generation_prompt=True)
    return _head(tokenizer) + tokenizer.encode(_plain_prompt(ex.messages[:-1]))


def _split(tokenizer: TokenizerLike, ex: ChatExample) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids with the end-of-turn marker), untruncated."""
    prompt = prompt_ids(tokenizer, ex)
    if _template(tokenizer) is not None:
        full = _render(tokenizer, ex.messages)
        if full[: len(prompt)] == prompt and len(full) > len(prompt):
            rest = full[len(prompt) :]
            special = getattr(tokenizer, "special_ids", frozenset({tokenizer.eos_id}))
            end = next((i for i, t in enumerate(rest) if t in special), None)
            return prompt, rest[: end + 1] if end is not None else [*rest, tokenizer.eos_id]
    return prompt, tokenizer.encode(reference(ex)) + [tokenizer.eos_id]


def encode_chat(
    tokenizer: TokenizerLike, ex: ChatExample, *, max_len: int, stats: EncodeStats | None = None
) -> Encoded | None:
    """``(input_ids, labels)`` for ``ex``, two int lists of the same length ``<= max_len``, labels
    ``-100`` except on the answer and its end marker (where they equal ``input_ids``).

    A prompt too long loses tokens from its left until the example fits (``stats.truncated``); the
    answer is never cut: ``None`` (``stats.dropped``) when it alone is longer than ``max_len``
    (``max_len - 1`` with a plain-layout ``bos``). Raises ``ValueError`` if ``max_len < 2`` or
    the chat template refuses the conversation.
    """
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 2:
        raise ValueError(f"max_len must be an int >= 2, got {max_len!r}")
    stats = stats if stats is not None else EncodeStats()
    prompt, answer = _split(tokenizer, ex)
    # the plain layout keeps bos when it cuts the prompt, as encode_example does
    head = _head(tokenizer) if _template(tokenizer) is None else []
    body = prompt[len(head) :]
    room = max_len - len(head) - len(answer)  # tokens left for the prompt
    if room < 0:
        stats.dropped += 1
        return None
    if len(body) > room:
        body = body[len(body) - room :]
        stats.truncated += 1
    stats.kept += 1
    input_ids = [*head, *body, *answer]
    labels = [IGNORE_INDEX] * (len(head) + len(body)) + answer
    assert len(input_ids) == len(labels) <= max_len
    return input_ids, labels
