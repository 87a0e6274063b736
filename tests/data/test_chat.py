"""load_jsonl: Alpaca, chat and ShareGPT rows; malformed lines named FILE:LINE; partition_labels."""

from __future__ import annotations

import json

import pytest

from fedcore.data import ChatExample, DataFileNotFoundError, LoadedRows, load_jsonl, partition_labels


def write_lines(path, lines) -> str:
    path.write_text("".join(line if isinstance(line, str) else json.dumps(line) for line in lines), encoding="utf-8")
    return str(path)


def rows_file(tmp_path, *rows, name="data.jsonl") -> str:
    return write_lines(tmp_path / name, [json.dumps(r) + "\n" for r in rows])


def test_alpaca_rows_become_two_turns_and_keep_scalar_fields(tmp_path):
    path = rows_file(
        tmp_path,
        {"instruction": "Add.", "input": "2 + 3", "output": "5", "category": "math", "n": 3, "meta": {"a": 1}},
        {"instruction": "Greet.", "output": "Hello", "ok": True, "tags": ["x"], "score": 0.5, "none": None},
    )
    rows = load_jsonl(path)
    assert isinstance(rows, LoadedRows) and rows.skipped == []
    first, second = rows.examples
    assert first.messages == (("user", "Add.\n\n2 + 3"), ("assistant", "5"))
    assert first.fields == {"category": "math", "n": 3}  # the object "meta" is not a scalar field
    assert second.messages == (("user", "Greet."), ("assistant", "Hello"))
    assert second.fields == {"ok": True, "score": 0.5}


def test_chat_and_sharegpt_rows(tmp_path):
    chat = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."},
        ],
        "category": "trivia",
    }
    sharegpt = {
        "id": "x1",
        "conversations": [
            {"from": "system", "value": "S"},
            {"from": "human", "value": "Q"},
            {"from": "gpt", "value": "A"},
        ],
    }
    rows = load_jsonl(rows_file(tmp_path, chat, sharegpt, {"instruction": "I", "output": "O"}))
    a, b, c = rows.examples
    assert a.messages[0] == ("system", "Be brief.") and a.messages[-1] == ("assistant", "Paris.")
    assert len(a.messages) == 5 and a.fields == {"category": "trivia"}
    assert b.messages == (("system", "S"), ("user", "Q"), ("assistant", "A"))
    assert b.fields == {"id": "x1"}
    assert c.messages == (("user", "I"), ("assistant", "O"))


def test_format_forces_one_reading(tmp_path):
    chat = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}
    alpaca = {"instruction": "I", "output": "O"}
    path = rows_file(tmp_path, chat, alpaca)
    with pytest.raises(ValueError, match=r":1: missing required field 'instruction'"):
        load_jsonl(path, format="alpaca")
    with pytest.raises(ValueError, match=r":2: a chat row needs 'messages'"):
        load_jsonl(path, format="chat")
    assert len(load_jsonl(path, format="chat", skip_bad=True).examples) == 1
    with pytest.raises(ValueError, match="format must be one of"):
        load_jsonl(path, format="jsonl")  # type: ignore[arg-type]


def test_truncated_last_line_names_file_and_line(tmp_path):
    good = json.dumps({"instruction": "I", "output": "O"})
    path = write_lines(tmp_path / "cut.jsonl", [good + "\n", "\n", good + "\n", good[:-7]])  # no newline at the end
    with pytest.raises(ValueError) as err:
        load_jsonl(path)
    message = str(err.value)
    assert message.startswith(f"{path}:4: invalid JSON") and "truncated" in message
    assert "\n" not in message
    rows = load_jsonl(path, skip_bad=True)
    assert len(rows.examples) == 2
    assert len(rows.skipped) == 1 and rows.skipped[0].startswith(f"{path}:4: ")


BAD_LINES = [
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"instruction": "I"}', "missing required field 'output'"),
    ('{"instruction": 3, "output": "O"}', "field 'instruction' must be a string, got int"),
    ('{"instruction": "I", "input": null, "output": "O"}', "field 'input' must be a string, got NoneType"),
    ('{"text": "hello"}', "neither a chat row"),
    ('{"messages": "hi"}', "field 'messages' must be a list"),
    ('{"messages": ["hi"]}', "messages[0] must be an object"),
    ('{"messages": [{"role": "user", "content": "Q"}]}', "ends with a 'user' turn"),
    ('{"messages": [{"role": "assistant", "content": "A"}]}', "no user turn"),
    ('{"messages": []}', "no user turn"),
    ('{"messages": [{"role": "bot", "content": "Q"}]}', "unknown role 'bot'"),
    ('{"messages": [{"role": "user", "content": 5}]}', "field 'content' in messages[0] must be a string"),
    ('{"messages": [{"content": "Q"}]}', "missing required field 'role' in messages[0]"),
    ('{"conversations": [{"from": "robot", "value": "Q"}]}', "unknown role 'robot'"),
    ('{"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt"}]}', "missing required field 'value'"),
    ("not json", "invalid JSON"),
]


@pytest.mark.parametrize("line, reason", BAD_LINES)
def test_each_malformed_line_is_one_error_line(tmp_path, line, reason):
    good = json.dumps({"instruction": "I", "output": "O"}) + "\n"
    path = write_lines(tmp_path / "bad.jsonl", [good, line + "\n", good])
    with pytest.raises(ValueError) as err:
        load_jsonl(path)
    message = str(err.value)
    assert message.startswith(f"{path}:2: ") and reason in message and "\n" not in message
    rows = load_jsonl(path, skip_bad=True)
    assert len(rows.examples) == 2 and len(rows.skipped) == 1 and reason in rows.skipped[0]


def test_bad_utf8_is_one_bad_line_and_a_bom_is_ignored(tmp_path):
    good = json.dumps({"instruction": "caf\u00e9", "output": "O"}, ensure_ascii=False).encode() + b"\n"
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + good + b'{"instruction": "\xff", "output": "O"}\n' + good)
    rows = load_jsonl(path, skip_bad=True)
    assert [ex.messages[0][1] for ex in rows.examples] == ["caf\u00e9", "caf\u00e9"]
    assert len(rows.skipped) == 1 and rows.skipped[0].startswith(f"{path}:2: not UTF-8")


def test_empty_dataset(tmp_path):
    empty = write_lines(tmp_path / "empty.jsonl", ["\n", "  \n"])
    with pytest.raises(ValueError, match=r"empty\.jsonl: no usable examples \(0 lines skipped\)"):
        load_jsonl(empty)
    bad = write_lines(tmp_path / "bad.jsonl", ["{\n", "[]\n"])
    with pytest.raises(ValueError, match=r"no usable examples \(2 lines skipped\)"):
        load_jsonl(bad, skip_bad=True)


def test_missing_file_and_folder(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match=f"^data.path {missing} does not exist$") as err:
        load_jsonl(missing)
    assert isinstance(err.value, DataFileNotFoundError) and isinstance(err.value, ValueError)
    with pytest.raises(ValueError, match="is a folder"):
        load_jsonl(tmp_path)


def test_partition_labels(tmp_path):
    path = rows_file(
        tmp_path,
        {"instruction": "a", "output": "1", "category": "x", "n": 1},
        {"instruction": "b", "output": "2", "category": "y"},
        {"instruction": "c", "output": "3", "n": 2},
    )
    examples = load_jsonl(path).examples
    assert partition_labels(examples, "category") == ["x", "y", "<missing>"]
    assert partition_labels(examples, "n") == ["1", "<missing>", "2"]
    present = r"partition key 'skill' is in no row's fields \(fields present: 'category', 'n'\)"
    with pytest.raises(ValueError, match=present):
        partition_labels(examples, "skill")
    no_fields = [ChatExample((("user", "q"), ("assistant", "a")), {})]
    with pytest.raises(ValueError, match="fields present: none"):
        partition_labels(no_fields, "category")
    assert partition_labels([], "category") == []


def test_chat_example_checks_and_normalises():
    ex = ChatExample([["user", "q"], ["assistant", "a"]], {"k": "v"})  # type: ignore[arg-type]
    assert ex.messages == (("user", "q"), ("assistant", "a"))
    assert hash(ex) == hash(ChatExample((("user", "q"), ("assistant", "a")), {"other": 1}))
    assert ex != ChatExample((("user", "q"), ("assistant", "a")), {"other": 1})
    with pytest.raises(ValueError, match="must end with the assistant"):
        ChatExample((("user", "q"),), {})
    with pytest.raises(ValueError, match="unknown role 'tool'"):
        ChatExample((("user", "q"), ("tool", "x"), ("assistant", "a")), {})
    with pytest.raises(TypeError, match="field 'tags' must be a str, int, float or bool"):
        ChatExample((("user", "q"), ("assistant", "a")), {"tags": ["x"]})
