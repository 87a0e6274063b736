"""Shared fixtures for the fedcore.data tests."""

from __future__ import annotations

import random

import pytest


@pytest.fixture
def seed() -> int:
    """A fresh random seed per test; printed so a failure's captured output shows it."""
    value = random.SystemRandom().randrange(2**32)
    print(f"seed={value}")
    return value
