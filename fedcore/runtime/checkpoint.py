"""A run's checkpoint on disk: ``<run_dir>/checkpoint/`` holds a server role's ``Checkpoint``.

Layout (format version 1): ``tensors.safetensors`` (``Checkpoint.tensors``, safetensors) and
``checkpoint.json`` {version, round, state, tensors: {file, sha256, bytes}}. ``state`` is written
with Python's ``json`` (NaN and infinities as ``NaN`` / ``Infinity``; floats round-trip exactly).

Atomic replace (one writer per run directory): ``save_checkpoint`` writes both files into a fresh
sibling ``.checkpoint.tmp-*``, fsyncs them and it, then renames ``checkpoint`` -> ``checkpoint.old``,
the new one -> ``checkpoint``, fsyncs the run directory and removes ``checkpoint.old``. Only a
complete checkpoint is ever renamed to ``checkpoint`` or ``checkpoint.old``, so after a crash at
any point one of them is complete. Recovery rule: ``checkpoint/`` is the checkpoint when it exists
(a ``checkpoint.old`` next to it is a leftover, possibly half removed, and is ignored);
``checkpoint.old/`` is used only when ``checkpoint/`` is missing (a crash between the two renames).
``load_checkpoint`` never falls back from a damaged ``checkpoint/`` to ``checkpoint.old/``, and
never moves or deletes anything; the next ``save_checkpoint`` clears leftovers.

RNG helpers: ``python_rng_state`` / ``restore_python_rng`` turn a ``random.Random`` state into JSON
lists and back; ``torch_rng_state`` / ``restore_torch_rng`` a torch generator's state into a uint8
tensor (store it in ``Checkpoint.tensors`` under ``TORCH_RNG_KEY`` or another ``RNG_PREFIX`` name).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from fedcore.algorithms.registry import Checkpoint, python_rng_state, restore_python_rng

FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoint"
OLD_SUFFIX = ".old"
TMP_PREFIX = ".checkpoint.tmp-"
META_FILE = "checkpoint.json"
TENSOR_FILE = "tensors.safetensors"
RNG_PREFIX = "__rng__/"
TORCH_RNG_KEY = RNG_PREFIX + "torch"

__all__ = [
    "CHECKPOINT_DIR",
    "FORMAT_VERSION",
    "RNG_PREFIX",
    "TORCH_RNG_KEY",
    "checkpoint_dir",
    "load_checkpoint",
    "python_rng_state",
    "restore_python_rng",
    "restore_torch_rng",
    "save_checkpoint",
    "torch_rng_state",
]


def checkpoint_dir(run_dir: Path) -> Path:
    """Where ``save_checkpoint`` puts the checkpoint of ``run_dir``."""
    return Path(run_dir) / CHECKPOINT_DIR


def save_checkpoint(run_dir: Path, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` to ``<run_dir>/checkpoint/`` atomically (see the module docstring); returns
    that directory. ``TypeError`` / ``ValueError`` before anything on disk changes when the state
    is not JSON-ready, ``round`` not a non-negative int, or a tensor not a tensor."""
    run_dir = Path(run_dir)
    if isinstance(ckpt.round, bool) or not isinstance(ckpt.round, int) or ckpt.round < 0:
        raise ValueError(f"checkpoint round must be an int >= 0, got {ckpt.round!r}")
    if not isinstance(ckpt.state, dict):
        raise TypeError(f"checkpoint state must be a dict, got {type(ckpt.state).__name__}")
    try:
        json.dumps(ckpt.state)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"checkpoint state is not JSON-ready: {_one_line(exc)}") from exc
    tensors = {}
    for name, t in ckpt.tensors.items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor):
            raise TypeError(f"checkpoint tensors must map str to torch.Tensor, got {name!r}: {type(t).__name__}")
        # an own contiguous CPU copy: safetensors refuses views sharing storage
        tensors[name] = t.detach().to("cpu").clone(memory_format=torch.contiguous_format)

    run_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir(run_dir)
    old = final.with_name(final.name + OLD_SUFFIX)
    for stale in run_dir.glob(TMP_PREFIX + "*"):  # a crashed save's; never findable by load
        shutil.rmtree(stale, ignore_errors=True)
    tmp = run_dir / f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        tensor_path = tmp / TENSOR_FILE
        save_file(tensors, str(tensor_path))
        _fsync_file(tensor_path)
        digest, size = _sha256(tensor_path)
        info = {"file": TENSOR_FILE, "sha256": digest, "bytes": size}
        meta = json.dumps({"version": FORMAT_VERSION, "round": ckpt.round, "tensors": info, "state": ckpt.state}) + "\n"
        meta_path = tmp / META_FILE
        with open(meta_path, "w", encoding="utf-8") as f:
            f.write(meta)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        if final.exists():
            # checkpoint/ is complete, so a checkpoint.old/ beside it is a leftover: clear it first
            # (renaming onto a non-empty directory fails)
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
            _fsync_dir(run_dir)
        # a crash here leaves only checkpoint.old/, which load_checkpoint then reads
        os.replace(tmp, final)
        _fsync_dir(run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)  # checkpoint/ exists: a half-removed .old is ignored
    return final


def load_checkpoint(run_dir: Path) -> Checkpoint:
    """The checkpoint of ``run_dir`` (``checkpoint/``, or ``checkpoint.old/`` when only that one is
    there). ``ValueError`` with a one-line message when there is none, a file is missing, the
    tensor file is truncated or corrupt (size, sha256, safetensors), the JSON is bad or of another
    format version. Reads only."""
    run_dir = Path(run_dir)
    final = checkpoint_dir(run_dir)
    old = final.with_name(final.name + OLD_SUFFIX)
    if os.path.lexists(final):
        where = final
    elif old.is_dir():
        where = old
    else:
        raise ValueError(f"{run_dir} has no {CHECKPOINT_DIR}/ (was it started with checkpoints on?)")
    if not where.is_dir():
        raise ValueError(f"{where} is not a directory")
    meta_path = where / META_FILE
    meta = read_json_object(meta_path)
    version = meta.get("version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{meta_path} is format version {version!r}; this fedcore reads version {FORMAT_VERSION}")
    rnd, state, info = meta.get("round"), meta.get("state"), meta.get("tensors")
    if isinstance(rnd, bool) or not isinstance(rnd, int) or rnd < 0:
        raise ValueError(f"{meta_path}: round must be an int >= 0, got {rnd!r}")
    if not isinstance(state, dict):
        raise ValueError(f"{meta_path}: state must be an object, got {type(state).__name__}")
    if not isinstance(info, dict):
        raise ValueError(f"{meta_path}: tensors must be an object, got {type(info).__name__}")
    name, want_sha, want_size = info.get("file"), info.get("sha256"), info.get("bytes")
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"{meta_path}: tensors.file must be a plain file name, got {name!r}")
    if not isinstance(want_sha, str) or isinstance(want_size, bool) or not isinstance(want_size, int):
        raise ValueError(f"{meta_path}: tensors needs sha256 (str) and bytes (int), got {want_sha!r}, {want_size!r}")
    tensor_path = where / name
    if not tensor_path.is_file():
        raise ValueError(f"{tensor_path} is missing")
    size = tensor_path.stat().st_size
    if size != want_size:
        how = "truncated" if size < want_size else "longer than written"
        raise ValueError(f"{tensor_path} is {how}: {size} bytes, {META_FILE} says {want_size}")
    digest, _ = _sha256(tensor_path)
    if digest != want_sha:
        raise ValueError(f"{tensor_path} is corrupt: sha256 {digest} != {want_sha} of {META_FILE}")
    try:
        tensors = load_file(str(tensor_path))
    except Exception as exc:  # safetensors' parse errors are of several types
        raise ValueError(f"{tensor_path} is not a valid safetensors file: {_one_line(exc)}") from exc
    return Checkpoint(round=rnd, tensors=dict(tensors), state=state)


def torch_rng_state(generator: torch.Generator | None = None) -> torch.Tensor:
    """The state of ``generator`` (default: torch's global CPU generator) as a uint8 CPU tensor."""
    gen = generator if generator is not None else torch.default_generator
    return gen.get_state().clone()


def restore_torch_rng(state: torch.Tensor, generator: torch.Generator | None = None) -> None:
    """Set ``generator`` (default: torch's global CPU generator) to a ``torch_rng_state``."""
    gen = generator if generator is not None else torch.default_generator
    gen.set_state(state.to(device="cpu", dtype=torch.uint8))


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; ``ValueError`` (one line) when it is missing, not valid JSON
    or not an object."""
    if not path.is_file():
        raise ValueError(f"{path} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {_one_line(exc)}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _sha256(path: Path) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory fds (Windows): nothing to sync
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
