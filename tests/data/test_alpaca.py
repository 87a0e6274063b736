"""load_alpaca_jsonl / save_alpaca_jsonl: defaults, errors with line numbers, round trip."""

from __future__ import annotations

import json

import pytest

from fedcore.data import Example, load_alpaca_jsonl, make_instruction_task, save_alpaca_jsonl


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_defaults_and_skill_sources(tmp_path):
    path = _write(
        tmp_path / "d.jsonl",
        [
            json.dumps({"instruction": "Say hi.", "output": "hi"}),
            "",
            "   ",
            json.dumps({"instruction": "I", "input": "x", "output": "o", "skill": "copy"}),
            json.dumps({"instruction": "I", "output": "o", "category": "open_qa", "extra": 1}),
            json.dumps({"instruction": "I", "output": "o", "skill": "s", "category": "c"}),
        ],
    )
    assert load_alpaca_jsonl(path) == [
        Example("Say hi.", "", "hi", "unknown"),
        Example("I", "x", "o", "copy"),
        Example("I", "", "o", "open_qa"),
        Example("I", "", "o", "s"),
    ]


def test_round_trip(tmp_path, seed):
    examples = make_instruction_task(100, seed=seed)
    examples.append(Example('Quote "this"\nplease', "", "é ✓ \\ \t", "unknown"))
    path = tmp_path / "out.jsonl"
    save_alpaca_jsonl(examples, path)
    assert len(path.read_text(encoding="utf-8").splitlines()) == len(examples)
    assert load_alpaca_jsonl(str(path)) == examples


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    save_alpaca_jsonl([], path)
    assert load_alpaca_jsonl(path) == []


GOOD = json.dumps({"instruction": "I", "output": "o"})


@pytest.mark.parametrize(
    "bad,match",
    [
        ('{"instruction": "I", "output": ', "invalid JSON"),
        ('["I", "o"]', "expected a JSON object, got list"),
        ('"just a string"', "expected a JSON object, got str"),
        (json.dumps({"output": "o"}), "missing required field 'instruction'"),
        (json.dumps({"instruction": "I"}), "missing required field 'output'"),
        (json.dumps({"instruction": 3, "output": "o"}), "'instruction' must be a string"),
        (json.dumps({"instruction": "I", "output": None}), "'output' must be a string"),
        (json.dumps({"instruction": "I", "output": "o", "input": 5}), "'input' must be a string"),
        (json.dumps({"instruction": "I", "output": "o", "skill": ["a"]}), "'skill' must be"),
    ],
)
def test_errors_name_the_line(tmp_path, bad, match):
    # line 3 of the file (a blank line 2 still counts)
    path = _write(tmp_path / "bad.jsonl", [GOOD, "", bad, GOOD])
    with pytest.raises(ValueError, match=match) as info:
        load_alpaca_jsonl(path)
    assert "bad.jsonl:3:" in str(info.value)
