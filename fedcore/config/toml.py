"""TOML tables -> keyword-only config dataclasses, with errors that say what to write instead.

``build_config(cls, table)`` instantiates ``cls`` from nested dicts: unknown keys are refused with
the list of valid ones (or, for a key that was renamed, with its new name), values are checked
against the field's type, ``Literal`` choices are checked with the list of allowed values, and
nested dataclass fields recurse. ``dump_toml`` writes such tables back as TOML text. Imports
nothing of fedcore.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from pathlib import Path
from typing import Any, Literal


def check(ok: bool, message: str) -> None:
    """``ValueError(message)`` unless ``ok`` (config validation in ``__post_init__``)."""
    if not ok:
        raise ValueError(message)


def choices(cls: type, name: str) -> tuple[Any, ...]:
    """The allowed values of ``cls``'s ``Literal``-typed field ``name`` (empty if not a Literal)."""
    hint = typing.get_type_hints(cls)[name]
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else ()


def check_choices(obj: Any, section: str) -> None:
    """Every ``Literal``-typed field of dataclass ``obj`` holds one of its choices; the error names
    the key as ``section.field`` (``section`` empty: top level)."""
    for f in dataclasses.fields(obj):
        allowed = choices(type(obj), f.name)
        if allowed and getattr(obj, f.name) not in allowed:
            key = f"{section}.{f.name}" if section else f.name
            raise ValueError(f"{key} must be one of {allowed}, got {getattr(obj, f.name)!r}")


def build_config(cls: type, data: Any, where: str = "config", *, renamed: dict[str, str] | None = None) -> Any:
    """Instantiate dataclass ``cls`` from a TOML table, recursing into nested dataclasses.

    ``renamed`` maps keys of older config files to what replaced them (a sentence naming the new
    key); such a key fails with that sentence instead of the generic list of valid keys."""
    if not isinstance(data, dict):
        raise ValueError(f"[{where}] must be a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for old in sorted(set(data) - set(fields)):
        if renamed and old in renamed:
            prefix = "" if where == "config" else f"{where}."
            raise ValueError(f"key {prefix}{old!r} is gone: {renamed[old]}")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in [{where}]; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        key = name if where == "config" else f"{where}.{name}"
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            kwargs[name] = build_config(hint, value, key, renamed=getattr(hint, "RENAMED", None))
        else:
            kwargs[name] = _coerce(value, hint, key)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if not any(type(value) is type(a) and value == a for a in allowed):
            raise ValueError(f"{where} must be one of {allowed}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where} must be a list, got {value!r}")
        return list(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (type(value) is not hint):
        raise ValueError(f"{where} must be {hint.__name__}, got {value!r}")
    return value


def read_toml(path: str | Path) -> dict[str, Any]:
    """The tables of a TOML file; ``ValueError`` if it is missing or not valid TOML."""
    if not Path(path).is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    return parse_toml(Path(path).read_text(), str(path))


def parse_toml(text: str, where: str) -> dict[str, Any]:
    """The tables of TOML ``text`` (``where`` names it in the error)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{where}: invalid TOML: {err}") from err


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dicts (JSON/TOML-ready) of a config, e.g. for the metrics file header."""
    return dataclasses.asdict(config)


def dump_toml(tables: dict[str, Any]) -> str:
    """TOML text of a config's tables: top-level scalars first, then one ``[table]`` per dict of
    str / int / float / bool / lists of those (what ``parse_toml`` reads back). ``ValueError`` for
    a table nested deeper, which config files do not use."""

    def value(v: Any, key: str) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)  # JSON string escapes are TOML basic-string escapes
        if isinstance(v, list):
            return "[" + ", ".join(value(x, key) for x in v) + "]"
        if isinstance(v, int | float):
            return repr(v)
        raise ValueError(f"{key}: cannot write {type(v).__name__} to a config file")

    lines = [f"{k} = {value(v, k)}" for k, v in tables.items() if not isinstance(v, dict)]
    for name, table in tables.items():
        if isinstance(table, dict):
            lines += [f"[{name}]", *(f"{k} = {value(v, f'{name}.{k}')}" for k, v in table.items())]
    return "\n".join(lines) + "\n"
