"""One import namespace: fedcore.kernels and fedcore.transport exist; bare names do not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_subpackages_import_under_fedcore():
    import fedcore.kernels
    import fedcore.transport

    assert Path(fedcore.kernels.__file__).parent == REPO / "kernels"
    assert Path(fedcore.transport.__file__).parent == REPO / "transport"


@pytest.mark.parametrize("name", ["kernels", "transport"])
@pytest.mark.parametrize("cwd", ["elsewhere", "repo"])
def test_bare_top_level_modules_are_not_importable(tmp_path, name, cwd):
    # From the repo root `python -c` puts the checkout on sys.path: the guard must still refuse.
    where = REPO if cwd == "repo" else tmp_path
    proc = subprocess.run(
        [sys.executable, "-c", f"import {name}"], cwd=where, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    assert ("No module named" in proc.stderr) or (f"use fedcore.{name}" in proc.stderr)


def _source_packages() -> set[str]:
    found = set()
    for root, prefix in (
        (REPO / "fedcore", "fedcore"),
        (REPO / "kernels", "fedcore.kernels"),
        (REPO / "transport", "fedcore.transport"),
        (REPO / "csrc", "fedcore.csrc"),
    ):
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root).parts
            found.add(".".join((prefix, *rel)))
    return found


def test_pyproject_lists_every_package():
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert listed == _source_packages()
