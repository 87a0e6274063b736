"""The chatterbot-corpus conversations as chat rows, offline from the ``chatterbot-corpus`` wheel.

Each YAML file ``chatterbot_corpus/data/<language>/<category>.yml`` holds a ``conversations``
list of turn lists; a conversation becomes the row ``{"messages": [...], "category": <category>,
"id": "<category>:<index>"}`` with turns alternating user / assistant, which
:func:`~fedcore.data.chat.load_jsonl` reads. A conversation that is not a list of at least two
strings is skipped (English has one: a trivia entry YAML read as a single string); an odd number
of turns loses its trailing user turn, so every row ends with the assistant. The package is found
with ``find_spec``, never imported (its ``__init__`` is not needed), and read with PyYAML's
``safe_load``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .packages import MissingPackageError, package_dir

ROLES = ("user", "assistant")  # a conversation's turns, alternating from the first


def corpus_dir(language: str = "english") -> Path:
    """The folder of ``language``'s YAML files. Raises ``MissingPackageError`` (install
    ``fedcore[real]``) without the package, ``ValueError`` listing the languages for another."""
    data = package_dir("chatterbot_corpus", "chatterbot-corpus", "data") / "data"
    folder = data / language
    if not folder.is_dir():
        have = ", ".join(sorted(p.name for p in data.iterdir() if p.is_dir()))
        raise ValueError(f"chatterbot-corpus has no language {language!r}; it has {have}")
    return folder


def _turns(conversation: Any) -> list[str] | None:
    """The conversation's turns, stripped, cut to an even count; ``None`` when it is unusable."""
    if not isinstance(conversation, list) or not all(isinstance(t, str) for t in conversation):
        return None
    turns = [t.strip() for t in conversation]
    turns = turns[: len(turns) - len(turns) % 2]  # drop a trailing user turn: rows end with the answer
    return turns if len(turns) >= 2 else None


def chatterbot_rows(
    language: str = "english", categories: Sequence[str] | None = None, *, skipped: list[str] | None = None
) -> list[dict[str, Any]]:
    """The chat rows of ``language`` (categories in file-name order, conversations in file order),
    or of only the named ``categories``. ``skipped``, when given, gets one ``"<category>:<index>:
    reason"`` per conversation left out. Raises ``ValueError`` for an unknown language or
    category, ``MissingPackageError`` when ``chatterbot-corpus`` (or PyYAML) is not installed."""
    try:
        import yaml
    except ImportError as err:
        raise MissingPackageError("reading chatterbot-corpus needs PyYAML: install fedcore[real]") from err
    folder = corpus_dir(language)
    files = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix in (".yml", ".yaml")}
    wanted = list(files) if categories is None else list(categories)
    unknown = [c for c in wanted if c not in files]
    if unknown:
        raise ValueError(f"chatterbot-corpus {language} has no category {unknown[0]!r}; it has {', '.join(files)}")
    rows: list[dict[str, Any]] = []
    for category in wanted:
        with open(files[category], encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        conversations = doc.get("conversations") if isinstance(doc, dict) else None
        for index, conversation in enumerate(conversations if isinstance(conversations, list) else []):
            turns = _turns(conversation)
            if turns is None:
                if skipped is not None:
                    skipped.append(f"{category}:{index}: not a list of at least two strings: {conversation!r:.60}")
                continue
            messages = [{"role": ROLES[i % 2], "content": text} for i, text in enumerate(turns)]
            rows.append({"messages": messages, "category": category, "id": f"{category}:{index}"})
    return rows


def write_chatterbot_jsonl(path: str | os.PathLike[str], language: str = "english") -> int:
    """Write :func:`chatterbot_rows` of ``language`` to ``path`` (overwriting it), one JSON object
    per line, UTF-8; returns the number of rows written."""
    rows = chatterbot_rows(language)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows)
