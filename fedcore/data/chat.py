"""Conversations from JSONL files: Alpaca rows, chat rows (``messages``) and ShareGPT rows
(``conversations``), one JSON object per line, all read into :class:`ChatExample`.

* Alpaca: ``instruction``, optional ``input``, ``output`` (strings) become the turns
  ``("user", instruction)`` (or ``f"{instruction}\\n\\n{input}"`` when ``input`` is not empty) and
  ``("assistant", output)``.
* Chat: ``messages: [{"role": "system" | "user" | "assistant", "content": str}, ...]``.
* ShareGPT: ``conversations: [{"from": "system" | "human" | "gpt", "value": str}, ...]``
  (``"user"`` / ``"assistant"`` are accepted in ``from`` too).

A conversation needs a user turn and must end with an assistant turn (the answer the model is
trained on). The row's other top-level fields with a str / int / float / bool value are kept in
:attr:`ChatExample.fields` (e.g. ``{"category": "trivia", "id": "trivia:3"}``) for
:func:`partition_labels`; fields with other values (lists, objects, null) are left out.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "gpt": "assistant", "user": "user", "assistant": "assistant"}
FORMATS = ("auto", "alpaca", "chat")
MISSING_LABEL = "<missing>"
Format = Literal["auto", "alpaca", "chat"]


class DataFileNotFoundError(FileNotFoundError, ValueError):
    """A dataset path that does not exist. A ``ValueError`` too, so callers that report bad input
    in one line (the CLI) report this one the same way."""


def check_messages(messages: Sequence[tuple[str, str]]) -> str | None:
    """Why ``messages`` is not a usable conversation (unknown role, no user turn, not ending with
    an assistant turn, a non-string part), or ``None`` when it is."""
    for i, turn in enumerate(messages):
        if not (isinstance(turn, tuple) and len(turn) == 2 and all(isinstance(s, str) for s in turn)):
            return f"turn {i} must be a (role, content) pair of strings, got {turn!r}"
        if turn[0] not in ROLES:
            return f"turn {i} has unknown role {turn[0]!r}; expected one of {', '.join(ROLES)}"
    if not any(role == "user" for role, _ in messages):
        return "the conversation has no user turn"
    if messages[-1][0] != "assistant":
        return f"the conversation ends with a {messages[-1][0]!r} turn; it must end with the assistant's answer"
    return None


@dataclass(frozen=True)
class ChatExample:
    """One conversation: (role, content) turns, roles "system" | "user" | "assistant", at least one
    user turn, ending with an assistant turn (the answer); ``fields``: the row's other top-level
    fields (str/int/float/bool values only), e.g. {"category": "trivia"}, for partition_key.

    Lists are turned into tuples; ``ValueError`` for a conversation :func:`check_messages` refuses,
    ``TypeError`` for a field value of another type. Hashing ignores ``fields``.
    """

    messages: tuple[tuple[str, str], ...]
    fields: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        messages = tuple(tuple(t) if isinstance(t, list) else t for t in self.messages)
        object.__setattr__(self, "messages", messages)
        reason = check_messages(messages)
        if reason is not None:
            raise ValueError(f"bad conversation: {reason}")
        for key, value in self.fields.items():
            if not isinstance(value, str | int | float | bool):
                raise TypeError(f"field {key!r} must be a str, int, float or bool, got {type(value).__name__}")
        object.__setattr__(self, "fields", dict(self.fields))


@dataclass
class LoadedRows:
    """What :func:`load_jsonl` read: the usable conversations in file order, and one
    ``"FILE:LINE: reason"`` per malformed line it skipped (``skip_bad=True``)."""

    examples: list[ChatExample]
    skipped: list[str]


class _BadRow(Exception):
    """A malformed row; the message is the reason, without the file and line."""


def _string(obj: Mapping[str, Any], key: str, where: str = "") -> str:
    if key not in obj:
        raise _BadRow(f"missing required field {key!r}{where}")
    value = obj[key]
    if not isinstance(value, str):
        raise _BadRow(f"field {key!r}{where} must be a string, got {type(value).__name__}")
    return value


def _scalar_fields(obj: Mapping[str, Any], used: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in used and isinstance(v, str | int | float | bool)}


def _alpaca(obj: Mapping[str, Any]) -> ChatExample:
    instruction, output = _string(obj, "instruction"), _string(obj, "output")
    inp = _string(obj, "input") if "input" in obj else ""
    prompt = f"{instruction}\n\n{inp}" if inp else instruction
    return _example((("user", prompt), ("assistant", output)), obj, ("instruction", "input", "output"))


def _chat(obj: Mapping[str, Any]) -> ChatExample:
    # chat rows: role / content; ShareGPT rows: from / value with their own role names
    key, role_key, text_key, names = (
        ("messages", "role", "content", {r: r for r in ROLES})
        if "messages" in obj
        else ("conversations", "from", "value", SHAREGPT_ROLES)
    )
    turns = obj.get(key)
    if not isinstance(turns, list):
        raise _BadRow(f"field {key!r} must be a list of turns, got {type(turns).__name__}")
    messages = []
    for i, turn in enumerate(turns):
        where = f" in {key}[{i}]"
        if not isinstance(turn, dict):
            raise _BadRow(f"{key}[{i}] must be an object, got {type(turn).__name__}")
        role = _string(turn, role_key, where)
        if role not in names:
            raise _BadRow(f"unknown role {role!r}{where}; expected one of {', '.join(names)}")
        messages.append((names[role], _string(turn, text_key, where)))
    return _example(tuple(messages), obj, (key,))


def _example(messages: tuple[tuple[str, str], ...], obj: Mapping[str, Any], used: tuple[str, ...]) -> ChatExample:
    reason = check_messages(messages)
    if reason is not None:
        raise _BadRow(reason)
    return ChatExample(messages, _scalar_fields(obj, used))


def _parse(raw: bytes, fmt: Format) -> ChatExample:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _BadRow(f"not UTF-8 ({err.reason} at byte {err.start})") from err
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        hint = " (truncated line?)" if err.pos >= len(text.rstrip()) else ""
        raise _BadRow(f"invalid JSON ({err.msg}, column {err.colno}){hint}; expected one object per line") from err
    if not isinstance(obj, dict):
        raise _BadRow(f"expected a JSON object, got {type(obj).__name__}")
    is_chat = "messages" in obj or "conversations" in obj
    if fmt == "chat" or (fmt == "auto" and is_chat):
        if not is_chat:
            raise _BadRow(f"a chat row needs 'messages' (or ShareGPT 'conversations'); it has {_keys(obj)}")
        return _chat(obj)
    if fmt == "auto" and "instruction" not in obj and "output" not in obj:
        raise _BadRow(
            f"neither a chat row ('messages' / 'conversations') nor an Alpaca row ('instruction', 'output'): "
            f"it has {_keys(obj)}"
        )
    return _alpaca(obj)


def _keys(obj: Mapping[str, Any]) -> str:
    return ", ".join(repr(k) for k in list(obj)[:8]) or "no fields"


def load_jsonl(path: str | os.PathLike[str], *, format: Format = "auto", skip_bad: bool = False) -> LoadedRows:
    """The conversations in the JSONL file at ``path``, in file order; blank lines are ignored.

    ``format="auto"`` decides per line: ``messages`` or ``conversations`` make a chat row, else it
    is read as Alpaca. A malformed line (invalid JSON or UTF-8, a truncated line, not an object,
    missing or ill-typed fields, an unknown role, no user turn, not ending with the assistant) is
    the error ``"FILE:LINE: reason"`` (1-based line): ``ValueError`` for the first one, or with
    ``skip_bad`` one entry in :attr:`LoadedRows.skipped` each. Raises
    :class:`DataFileNotFoundError` (a ``FileNotFoundError`` and ``ValueError``) for a missing
    file, ``ValueError`` for a bad ``format``, a folder, or a file without one usable row.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    name = os.fspath(path)
    if os.path.isdir(name):
        raise ValueError(f"data.path {name} is a folder; expected a JSONL file (one JSON object per line)")
    if not os.path.exists(name):
        raise DataFileNotFoundError(f"data.path {name} does not exist")
    examples: list[ChatExample] = []
    skipped: list[str] = []
    with open(name, "rb") as f:  # bytes, so that one line of bad UTF-8 is one bad line
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
            if not raw.strip():
                continue
            try:
                examples.append(_parse(raw, format))
            except _BadRow as err:
                message = f"{name}:{lineno}: {err}"
                if not skip_bad:
                    raise ValueError(message) from None
                skipped.append(message)
    if not examples:
        raise ValueError(f"{name}: no usable examples ({len(skipped)} lines skipped)")
    return LoadedRows(examples, skipped)


def partition_labels(examples: Sequence[ChatExample], key: str) -> list[str]:
    """``str(ex.fields[key])`` for each example, ``"<missing>"`` where a row lacks ``key``.

    Raises ``ValueError`` naming ``key`` and some of the fields the rows do have when no row has
    ``key`` (a typo in the partition key would otherwise put every row in one label).
    """
    labels = [str(ex.fields[key]) if key in ex.fields else MISSING_LABEL for ex in examples]
    if examples and all(key not in ex.fields for ex in examples):
        present: dict[str, None] = {}
        for ex in examples:
            present.update(dict.fromkeys(ex.fields))
            if len(present) >= 6:
                break
        have = ", ".join(repr(k) for k in list(present)[:6]) or "none"
        raise ValueError(f"partition key {key!r} is in no row's fields (fields present: {have}); use one of those")
    return labels
