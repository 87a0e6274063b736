"""chatterbot_rows over the real English corpus (2,026 conversations, 21 categories) and a small
corpus written here for the edge cases; rows load through load_jsonl."""

from __future__ import annotations

import collections

import pytest

from fedcore.data import (
    MissingPackageError,
    chatterbot_rows,
    load_jsonl,
    partition_labels,
    write_chatterbot_jsonl,
)
from fedcore.data import chatterbot as chatterbot_module

CATEGORIES = (
    "ai botprofile coding computers conversations emotion food gossip greetings health history humor literature "
    "money movies politics psychology science sports tech_support trivia"
).split()


@pytest.fixture(scope="module")
def english():
    pytest.importorskip("yaml", reason="PyYAML is not installed (pip install 'fedcore[real]')")
    skipped: list[str] = []
    try:
        rows = chatterbot_rows("english", skipped=skipped)
    except MissingPackageError as err:
        pytest.skip(str(err))
    return rows, skipped


def test_english_corpus(english):
    rows, skipped = english
    counts = collections.Counter(row["category"] for row in rows)
    assert sorted(counts) == CATEGORIES
    # 2,026 conversations; one trivia entry is a single string in the YAML (a "- '22'" inside the question)
    assert len(rows) + len(skipped) == 2026 and len(skipped) == 1
    assert skipped[0].startswith("trivia:13: not a list")
    assert counts["tech_support"] == 1050 and counts["trivia"] == 260 and counts["coding"] == 184
    assert len({row["id"] for row in rows}) == len(rows)
    for row in rows:
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) and roles
        assert all(isinstance(m["content"], str) and m["content"] == m["content"].strip() for m in row["messages"])
    first = next(row for row in rows if row["id"] == "trivia:0")
    assert first["messages"] == [
        {"role": "user", "content": "Who was the 37th President of the United States?"},
        {"role": "assistant", "content": "Richard Nixon"},
    ]


def test_rows_load_through_load_jsonl(english, tmp_path):
    rows, _ = english
    path = tmp_path / "chatterbot.jsonl"
    assert write_chatterbot_jsonl(path) == len(rows)
    loaded = load_jsonl(path)
    assert loaded.skipped == [] and len(loaded.examples) == len(rows)
    assert sorted(set(partition_labels(loaded.examples, "category"))) == CATEGORIES
    ex = loaded.examples[0]
    assert ex.fields == {"category": rows[0]["category"], "id": rows[0]["id"]}
    assert ex.messages == tuple((m["role"], m["content"]) for m in rows[0]["messages"])


def test_categories_and_languages(english):
    rows = chatterbot_rows("english", ["trivia", "health"])
    assert [r["category"] for r in rows] == ["trivia"] * 260 + ["health"]
    with pytest.raises(ValueError, match="has no category 'weather'; it has ai, botprofile"):
        chatterbot_rows("english", ["weather"])
    with pytest.raises(ValueError, match="has no language 'klingon'; it has bengali, chinese"):
        chatterbot_rows("klingon")
    assert {r["category"] for r in chatterbot_rows("spanish")} >= {"trivia"}


FAKE = """\
categories:
- fake
conversations:
- - hi
  - hello
- - only one
- - a question
  - an answer
  - a trailing user turn
- - 1
  - 2
- just a string
- - '  padded  '
  - |
    folded
    text
- - q1
  - a1
  - q2
  - a2
"""


def test_edge_cases_on_a_small_corpus(tmp_path, monkeypatch):
    pytest.importorskip("yaml")
    (tmp_path / "data" / "xx").mkdir(parents=True)
    (tmp_path / "data" / "xx" / "fake.yml").write_text(FAKE, encoding="utf-8")
    (tmp_path / "data" / "xx" / "notes.txt").write_text("not a category")
    monkeypatch.setattr(chatterbot_module, "package_dir", lambda *args: tmp_path)
    skipped: list[str] = []
    rows = chatterbot_rows("xx", skipped=skipped)
    assert [r["id"] for r in rows] == ["fake:0", "fake:2", "fake:5", "fake:6"]  # ids keep the file's index
    assert [len(r["messages"]) for r in rows] == [2, 2, 2, 4]
    assert rows[1]["messages"][-1] == {"role": "assistant", "content": "an answer"}
    assert rows[2]["messages"] == [
        {"role": "user", "content": "padded"},
        {"role": "assistant", "content": "folded\ntext"},
    ]
    assert [s.split(":")[1] for s in skipped] == ["1", "3", "4"]
    assert write_chatterbot_jsonl(tmp_path / "out.jsonl", "xx") == 4


def test_missing_package(monkeypatch):
    real = chatterbot_module.package_dir

    def missing(module, distribution, needed):
        return real("no_such_module_for_fedcore_tests", distribution, needed)

    monkeypatch.setattr(chatterbot_module, "package_dir", missing)
    with pytest.raises(MissingPackageError, match=r"chatterbot-corpus package is not installed: .*fedcore\[real\]"):
        chatterbot_rows()
