"""Block schedules and participant sampling."""

from __future__ import annotations

import random

import pytest

from fedcore.algorithms.bcd import BlockSchedule, sample_participants


def test_deterministic_schedules():
    seq = BlockSchedule("sequential", 3)
    rev = BlockSchedule("reverse", 3)
    assert [seq.block(t) for t in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert [rev.block(t) for t in range(7)] == [2, 1, 0, 2, 1, 0, 2]


def test_random_schedule_is_seeded_and_covers_the_blocks():
    a, b = BlockSchedule("random", 5, seed=4), BlockSchedule("random", 5, seed=4)
    xs = [a.block(t) for t in range(200)]
    assert xs == [b.block(t) for t in range(200)]
    assert set(xs) == set(range(5))
    assert any(x == y for x, y in zip(xs, xs[1:], strict=False))  # repeats are allowed


def test_gradient_schedule_takes_the_largest_score():
    s = BlockSchedule("gradient", 4, seed=0)
    assert 0 <= s.block(0) < 4  # no scores yet: random
    assert s.block(1, [0.1, 5.0, 2.0, 5.0]) == 1  # ties: the lowest index
    with pytest.raises(ValueError, match="4 block scores"):
        s.block(2, [1.0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="schedule must be"):
        BlockSchedule("zigzag", 3)
    with pytest.raises(ValueError, match="num_blocks"):
        BlockSchedule("random", 0)
    with pytest.raises(ValueError, match="no clients"):
        sample_participants([], 0.5, random.Random(0))


@pytest.mark.parametrize(("fraction", "expect"), [(1.0, 10), (0.3, 3), (0.25, 3), (0.01, 1)])
def test_sample_participants(fraction, expect):
    got = sample_participants(list(range(10)), fraction, random.Random(1))
    assert len(got) == expect and got == sorted(set(got)) and set(got) <= set(range(10))
