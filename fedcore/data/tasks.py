"""A procedurally generated instruction-following task with six skills, small enough for a tiny LM.

Each :class:`Example` carries the Alpaca fields plus the skill that produced it, so a label-skew
partitioner can give clients different skill mixes. Skills (one fixed instruction each):

* ``add``       ``"12 + 7"`` -> ``"19"`` (both numbers in 0..99)
* ``subtract``  ``"45 - 23"`` -> ``"22"`` (both in 0..99, the first is the larger: never negative)
* ``copy``      ``"kqzt"`` -> ``"kqzt"`` (3-8 lowercase letters)
* ``reverse``   ``"kqzt"`` -> ``"tzqk"``
* ``sort``      ``"3 1 4 1 5"`` -> ``"1 1 3 4 5"`` (3-8 digits, ascending)
* ``recall``    ``"a=3 b=7 c=1 ? b"`` -> ``"7"`` (2-4 distinct keys, one-digit values)

A formatted example (instruction, input and output on their own lines) is at most 48 characters.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """One instruction example: Alpaca's ``instruction`` / ``input`` / ``output`` plus ``skill``.

    ``input`` is ``""`` when the instruction needs none; ``skill`` labels the example for
    partitioning (``"unknown"`` when a loaded dataset has no label).
    """

    instruction: str
    input: str
    output: str
    skill: str


INSTRUCTIONS: dict[str, str] = {
    "add": "Add the numbers.",
    "subtract": "Subtract the numbers.",
    "copy": "Copy the word.",
    "reverse": "Reverse the word.",
    "sort": "Sort the digits.",
    "recall": "Recall the value.",
}
SKILLS: tuple[str, ...] = ("add", "subtract", "copy", "reverse", "sort", "recall")


def _word(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 8)))


def _add(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    return f"{a} + {b}", str(a + b)


def _subtract(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    a, b = max(a, b), min(a, b)  # a non-negative answer keeps the output alphabet to digits
    return f"{a} - {b}", str(a - b)


def _copy(rng: random.Random) -> tuple[str, str]:
    word = _word(rng)
    return word, word


def _reverse(rng: random.Random) -> tuple[str, str]:
    word = _word(rng)
    return word, word[::-1]


def _sort(rng: random.Random) -> tuple[str, str]:
    digits = rng.choices(string.digits, k=rng.randint(3, 8))
    return " ".join(digits), " ".join(sorted(digits))


def _recall(rng: random.Random) -> tuple[str, str]:
    keys = rng.sample(string.ascii_lowercase, k=rng.randint(2, 4))
    values = [rng.choice(string.digits) for _ in keys]
    query = rng.randrange(len(keys))
    pairs = " ".join(f"{k}={v}" for k, v in zip(keys, values, strict=True))
    return f"{pairs} ? {keys[query]}", values[query]


_GENERATORS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "add": _add,
    "subtract": _subtract,
    "copy": _copy,
    "reverse": _reverse,
    "sort": _sort,
    "recall": _recall,
}
assert set(_GENERATORS) == set(SKILLS) == set(INSTRUCTIONS)


def make_instruction_task(n: int, *, seed: int, skills: Sequence[str] = SKILLS) -> list[Example]:
    """``n`` examples, each of a skill drawn uniformly from ``skills``, all from ``Random(seed)``.

    The same ``(n, seed, skills)`` always gives the same list. A skill listed twice is drawn twice
    as often. Raises ``ValueError`` for ``n < 1``, an empty ``skills`` or an unknown skill.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if isinstance(skills, str):
        raise ValueError(f"skills must be a sequence of names, e.g. ({skills!r},); valid: {', '.join(SKILLS)}")
    skills = tuple(skills)
    if not skills:
        raise ValueError(f"skills is empty; pick some of {', '.join(SKILLS)}")
    unknown = sorted({s for s in skills if s not in _GENERATORS}, key=str)
    if unknown:
        raise ValueError(f"unknown skills {unknown}; valid skills are {', '.join(SKILLS)}")
    rng = random.Random(seed)
    out: list[Example] = []
    for _ in range(n):
        skill = rng.choice(skills)
        inp, answer = _GENERATORS[skill](rng)
        out.append(Example(INSTRUCTIONS[skill], inp, answer, skill))
    return out
