"""make_instruction_task: every answer is right, prompts are short, seeds are reproducible."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from fedcore.data import INSTRUCTIONS, SKILLS, Example, format_prompt, make_instruction_task


def _check(ex: Example) -> None:
    """Recompute the answer from the input independently of the generator."""
    assert ex.instruction == INSTRUCTIONS[ex.skill]
    if ex.skill in ("add", "subtract"):
        op = "+" if ex.skill == "add" else "-"
        m = re.fullmatch(rf"(\d{{1,2}}) \{op} (\d{{1,2}})", ex.input)
        assert m, ex
        a, b = int(m[1]), int(m[2])
        assert 0 <= a <= 99 and 0 <= b <= 99
        assert ex.output == str(a + b if op == "+" else a - b), ex
        assert not ex.output.startswith("-"), ex
    elif ex.skill in ("copy", "reverse"):
        assert re.fullmatch(r"[a-z]{3,8}", ex.input), ex
        assert ex.output == (ex.input if ex.skill == "copy" else ex.input[::-1]), ex
    elif ex.skill == "sort":
        assert re.fullmatch(r"\d( \d){2,7}", ex.input), ex
        assert ex.output.split(" ") == sorted(ex.input.split(" ")), ex
    elif ex.skill == "recall":
        m = re.fullmatch(r"((?:[a-z]=\d )+)\? ([a-z])", ex.input)
        assert m, ex
        pairs = dict(p.split("=") for p in m[1].split())
        assert 2 <= len(pairs) <= 4 and len(pairs) == len(m[1].split()), "keys must be distinct"
        assert m[2] in pairs, ex
        assert ex.output == pairs[m[2]], ex
    else:
        pytest.fail(f"unexpected skill {ex.skill!r}")


def test_every_answer_is_correct(seed):
    examples = make_instruction_task(3000, seed=seed)
    assert len(examples) == 3000
    for ex in examples:
        _check(ex)


def test_checker_catches_wrong_answers():
    ex = make_instruction_task(1, seed=0, skills=("add",))[0]
    wrong = Example(ex.instruction, ex.input, str(int(ex.output) + 1), ex.skill)
    with pytest.raises(AssertionError):
        _check(wrong)


def test_prompts_are_short(seed):
    for ex in make_instruction_task(3000, seed=seed):
        assert len(format_prompt(ex) + ex.output) <= 48, ex


def test_same_seed_same_list_different_seed_different(seed):
    a = make_instruction_task(50, seed=seed)
    assert a == make_instruction_task(50, seed=seed)
    assert a != make_instruction_task(50, seed=seed + 1)


def test_skills_are_uniform_and_all_appear(seed):
    counts = Counter(ex.skill for ex in make_instruction_task(6000, seed=seed))
    assert set(counts) == set(SKILLS)
    # 1000 expected per skill, sd ~ 29: 850..1150 is > 5 sd either side
    assert all(850 <= c <= 1150 for c in counts.values()), counts


def test_skill_subset(seed):
    examples = make_instruction_task(200, seed=seed, skills=["reverse", "recall"])
    assert {ex.skill for ex in examples} == {"reverse", "recall"}


def test_example_is_frozen():
    ex = make_instruction_task(1, seed=1)[0]
    with pytest.raises(AttributeError):
        ex.output = "x"  # type: ignore[misc]


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_rejects_bad_n(n):
    with pytest.raises(ValueError, match="n must be"):
        make_instruction_task(n, seed=0)


@pytest.mark.parametrize("skills", [("add", "multiply"), ("Add",), "add"])
def test_rejects_unknown_skills_and_lists_valid_ones(skills):
    with pytest.raises(ValueError, match="subtract, copy, reverse, sort, recall"):
        make_instruction_task(5, seed=0, skills=skills)


def test_rejects_empty_skills():
    with pytest.raises(ValueError, match="empty"):
        make_instruction_task(5, seed=0, skills=())
