"""Read and write Alpaca-format JSONL: one JSON object per line.

Each object has string fields ``instruction`` and ``output`` (required), ``input`` (optional,
default ``""``) and a skill label taken from ``skill``, else ``category`` (Dolly's name), else
``"unknown"``. Other keys are ignored. Files are UTF-8.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from .tasks import Example

UNKNOWN_SKILL = "unknown"


def _field(obj: dict, key: str, lineno: int, path: str | os.PathLike[str]) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise ValueError(f"{os.fspath(path)}:{lineno}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def _parse_line(line: str, lineno: int, path: str | os.PathLike[str]) -> Example:
    where = f"{os.fspath(path)}:{lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: invalid JSON ({err.msg}); expected one object per line") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in ("instruction", "output"):
        if key not in obj:
            raise ValueError(f"{where}: missing required field {key!r}")
    instruction = _field(obj, "instruction", lineno, path)
    output = _field(obj, "output", lineno, path)
    inp = _field(obj, "input", lineno, path) if "input" in obj else ""
    label_key = next((k for k in ("skill", "category") if k in obj), None)
    skill = _field(obj, label_key, lineno, path) if label_key else UNKNOWN_SKILL
    return Example(instruction=instruction, input=inp, output=output, skill=skill)


def load_alpaca_jsonl(path: str | os.PathLike[str]) -> list[Example]:
    """The examples in the JSONL file at ``path``, in file order (blank lines skipped).

    Raises ``ValueError`` naming the 1-based line number for invalid JSON, a line that is not an
    object, a missing ``instruction``/``output``, or a field that is not a string.
    """
    examples: list[Example] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                examples.append(_parse_line(line, lineno, path))
    return examples


def save_alpaca_jsonl(examples: Iterable[Example], path: str | os.PathLike[str]) -> None:
    """Write ``examples`` to ``path`` (overwriting it), one object per line, readable by
    :func:`load_alpaca_jsonl`: keys ``instruction``, ``input``, ``output``, ``skill``."""
    with open(path, "w", encoding="utf-8") as f:
        for ex in examples:
            row = {
                "instruction": ex.instruction,
                "input": ex.input,
                "output": ex.output,
                "skill": ex.skill,
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
