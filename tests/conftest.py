"""Suite-wide: a FutureWarning or DeprecationWarning that fedcore's own code causes fails the test.

pyproject.toml's filterwarnings turn such a warning into an error at the call when it is attributed
to a fedcore module. A library's warning is attributed to the frame its ``stacklevel`` points at,
and when that frame is a call-forwarding wrapper (torch's ``Module.__call__``, transformers'
checkpointing layer wrapper, a decorator) the fedcore call behind it goes unnamed: fedcore's
``layer(..., past_key_values=cache)`` warns as ``transformers/modeling_layers.py``. So each test
phase runs with a ``warnings.showwarning`` that walks out from the attributed frame past such
wrappers and fails the phase when it lands in fedcore/, kernels/ or transport/. The warning still
reaches pytest's own record (and its summary). Warnings in ``pytest.warns`` / ``catch_warnings``
blocks of a test are that test's business and are not seen here.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import warnings
from collections.abc import Generator
from types import FrameType

import pytest

CATEGORIES = (FutureWarning, DeprecationWarning)

# modules whose frames only forward a call (the deprecation wrapper itself included): the caller
# responsible for a warning attributed to one of them is further out
FORWARDING = frozenset(
    {
        "contextlib",
        "functools",
        "torch.nn.modules.module",
        "torch.utils._contextlib",
        "transformers.modeling_layers",
        "transformers.utils.deprecation",
        "transformers.utils.generic",
    }
)


def _source_dirs() -> tuple[str, ...]:
    """fedcore's source folders (fedcore/, and kernels/ and transport/ mapped to fedcore.kernels /
    fedcore.transport), found without importing the subpackages."""
    dirs = []
    for name in ("fedcore", "fedcore.kernels", "fedcore.transport"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            dirs.append(os.path.dirname(os.path.realpath(spec.origin)) + os.sep)
    return tuple(dirs)


SOURCE_DIRS = _source_dirs()


def in_fedcore(filename: str) -> bool:
    """True for a file of fedcore's own source (not the tests, not a library)."""
    return os.path.realpath(filename).startswith(SOURCE_DIRS)


def responsible_frame(frame: FrameType | None, filename: str, lineno: int) -> FrameType | None:
    """The frame a warning attributed to ``filename:lineno`` comes from: that frame on the stack
    (innermost first, from ``frame`` outwards), or, when it only forwards a call, the first frame
    out from it that does not. None when the attributed frame is not on the stack."""
    while frame is not None and not (frame.f_code.co_filename == filename and frame.f_lineno == lineno):
        frame = frame.f_back
    while frame is not None and frame.f_globals.get("__name__") in FORWARDING:
        frame = frame.f_back
    return frame


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _no_fedcore_deprecations())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _no_fedcore_deprecations())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _no_fedcore_deprecations())


def _no_fedcore_deprecations() -> Generator[None, object, object]:
    caused: list[str] = []
    shown = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, CATEGORIES):
            frame = responsible_frame(sys._getframe(1), filename, lineno)
            where = (frame.f_code.co_filename, frame.f_lineno) if frame is not None else (filename, lineno)
            if in_fedcore(where[0]):
                caused.append(f"{where[0]}:{where[1]}: {category.__name__}: {message}")
        shown(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning
    try:
        result = yield
    finally:
        if warnings.showwarning is showwarning:
            warnings.showwarning = shown
    if caused:
        listed = "\n  ".join(dict.fromkeys(caused))
        pytest.fail(f"fedcore's own code caused a deprecation warning (use the current API):\n  {listed}")
    return result


class LogRecords(logging.Handler):
    """Collects the messages of WARNING and above (attach it to a logger, e.g. transformers')."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
