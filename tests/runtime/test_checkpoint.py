"""A run's checkpoint on disk: tensors and state round-trip exactly, a save replaces the last one
atomically (a crash at any step leaves a complete checkpoint findable), and a missing, truncated,
corrupt, malformed or foreign checkpoint is refused with a one-line ValueError, never replaced."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest
import torch

import fedcore.runtime.checkpoint as ck
from fedcore.algorithms.registry import Checkpoint
from fedcore.runtime.checkpoint import (
    TORCH_RNG_KEY,
    load_checkpoint,
    python_rng_state,
    restore_python_rng,
    restore_torch_rng,
    save_checkpoint,
    torch_rng_state,
)


def tensors(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(6, 4, generator=g)
    return {
        "fp32": torch.randn(3, 5, 7, generator=g),
        "bf16": torch.randn(13, 3, generator=g).to(torch.bfloat16),
        "fp16": torch.randn(1, generator=g).half(),
        "fp64": torch.randn(2, 1, 3, generator=g, dtype=torch.float64),
        "int64": torch.randint(-(2**40), 2**40, (9,), generator=g),
        "int8": torch.randint(-128, 127, (4, 4), generator=g, dtype=torch.int8),
        "bool": torch.rand(5, generator=g) > 0.5,
        "scalar": torch.tensor(float(seed)),
        "empty": torch.zeros(0, 4),
        "transposed": base.t(),  # not contiguous
        "view.a": base[:3],  # two views of one storage
        "view.b": base[3:],
        "lora.q_proj.lora_A": torch.randn(4, 32, generator=g),
    }


def state(seed: int) -> dict:
    return {
        "round_loss": [1.5, 0.1 + seed, 1e-300],
        "roster": {"active": [0, 2], "dropped": [[1, "no 'upload' for round 1"]]},
        "counters": {"steps": [6, 3, 6]},
        "schedule": None,
        "flag": True,
        "name": "fedit ✓",
    }


def ckpt(seed: int = 0) -> Checkpoint:
    return Checkpoint(round=seed + 1, tensors=tensors(seed), state=state(seed))


def assert_same(a: Checkpoint, b: Checkpoint) -> None:
    assert a.round == b.round
    assert set(a.tensors) == set(b.tensors)
    for name, t in a.tensors.items():
        u = b.tensors[name]
        assert u.dtype == t.dtype and u.shape == t.shape and u.device.type == "cpu", name
        assert torch.equal(u, t), name
    assert a.state == json.loads(json.dumps(b.state))


def listing(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*"))


def one_line_error(run_dir: Path, match: str) -> str:
    with pytest.raises(ValueError, match=match) as info:
        load_checkpoint(run_dir)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_tensors_and_state_round_trip(tmp_path):
    c = ckpt(3)
    c.state["nan"] = math.nan
    c.state["inf"] = -math.inf
    where = save_checkpoint(tmp_path / "run", c)  # the run directory is made if needed
    assert where == tmp_path / "run" / "checkpoint"
    assert sorted(p.name for p in where.iterdir()) == ["checkpoint.json", "tensors.safetensors"]
    meta = json.loads((where / "checkpoint.json").read_text())
    assert meta["version"] == 1 and meta["round"] == 4
    assert meta["tensors"]["file"] == "tensors.safetensors"
    assert meta["tensors"]["bytes"] == (where / "tensors.safetensors").stat().st_size
    back = load_checkpoint(tmp_path / "run")
    assert math.isnan(back.state.pop("nan")) and back.state.pop("inf") == -math.inf
    del c.state["nan"], c.state["inf"]
    assert_same(c, back)
    assert back.state["roster"]["dropped"] == [[1, "no 'upload' for round 1"]]
    assert back.state["round_loss"][1] == 3.1  # floats exactly


def test_rng_states_round_trip(tmp_path):
    rng = random.Random(5)
    rng.random()
    rng.gauss(0.0, 1.0)  # leaves a cached gauss_next
    gen = torch.Generator().manual_seed(11)
    torch.rand(3, generator=gen)
    c = Checkpoint(round=1, tensors={TORCH_RNG_KEY: torch_rng_state(gen)}, state={"rng": python_rng_state(rng)})
    save_checkpoint(tmp_path, c)
    back = load_checkpoint(tmp_path)
    assert back.tensors[TORCH_RNG_KEY].dtype == torch.uint8
    want = [rng.gauss(0.0, 1.0), rng.random(), rng.sample(range(100), 5)]
    other = restore_python_rng(random.Random(0), back.state["rng"])
    assert [other.gauss(0.0, 1.0), other.random(), other.sample(range(100), 5)] == want
    gen2 = torch.Generator().manual_seed(0)
    restore_torch_rng(back.tensors[TORCH_RNG_KEY], gen2)
    assert torch.equal(torch.rand(4, generator=gen2), torch.rand(4, generator=gen))
    # the global generator too
    saved = torch_rng_state()
    a = torch.rand(3)
    restore_torch_rng(saved)
    assert torch.equal(torch.rand(3), a)
    with pytest.raises(ValueError, match="python_rng_state"):
        restore_python_rng(random.Random(), [3, "x"])


def test_a_save_replaces_the_last_one_and_leaves_nothing_behind(tmp_path):
    save_checkpoint(tmp_path, ckpt(0))
    save_checkpoint(tmp_path, ckpt(1))
    assert_same(ckpt(1), load_checkpoint(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


@pytest.mark.parametrize("crash_at", [1, 2])
def test_a_crash_while_replacing_leaves_a_complete_checkpoint(tmp_path, monkeypatch, crash_at):
    save_checkpoint(tmp_path, ckpt(0))
    real, calls = ck.os.replace, []

    def replace(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == crash_at:
            raise OSError("power cut")
        real(src, dst)

    monkeypatch.setattr(ck.os, "replace", replace)
    with pytest.raises(OSError, match="power cut"):
        save_checkpoint(tmp_path, ckpt(1))
    monkeypatch.undo()
    assert calls[0] == ("checkpoint", "checkpoint.old")
    assert calls[-1][1] == ("checkpoint.old", "checkpoint")[crash_at - 1]
    # 1: checkpoint/ never moved; 2: only checkpoint.old/ is there, and it is the old complete one
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == (["checkpoint"] if crash_at == 1 else ["checkpoint.old"])
    assert_same(ckpt(0), load_checkpoint(tmp_path))
    save_checkpoint(tmp_path, ckpt(2))  # the next save recovers
    assert_same(ckpt(2), load_checkpoint(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_a_crash_while_writing_leaves_the_old_one(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, ckpt(0))

    def save_file(*args, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", save_file)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, ckpt(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    assert_same(ckpt(0), load_checkpoint(tmp_path))


def test_a_leftover_old_beside_a_checkpoint_is_ignored_and_cleared(tmp_path):
    save_checkpoint(tmp_path, ckpt(0))
    shutil.copytree(tmp_path / "checkpoint", tmp_path / "checkpoint.old")
    save_checkpoint(tmp_path, ckpt(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    # a half-removed checkpoint.old/ (crash while removing it): checkpoint/ is the one
    shutil.copytree(tmp_path / "checkpoint", tmp_path / "checkpoint.old")
    (tmp_path / "checkpoint.old" / "tensors.safetensors").unlink()
    assert_same(ckpt(1), load_checkpoint(tmp_path))
    # a stale temporary directory of a crashed save is never read, and cleared by the next save
    (tmp_path / ".checkpoint.tmp-1-dead").mkdir()
    assert_same(ckpt(1), load_checkpoint(tmp_path))
    save_checkpoint(tmp_path, ckpt(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_only_checkpoint_old_is_read_when_checkpoint_is_missing(tmp_path):
    save_checkpoint(tmp_path, ckpt(0))
    (tmp_path / "checkpoint").rename(tmp_path / "checkpoint.old")
    assert_same(ckpt(0), load_checkpoint(tmp_path))
    # a damaged checkpoint/ is refused even with a good checkpoint.old/ beside it
    (tmp_path / "checkpoint").mkdir()
    one_line_error(tmp_path, r"checkpoint\.json is missing")


def test_no_checkpoint_is_refused(tmp_path):
    msg = one_line_error(tmp_path, r"has no checkpoint/ \(was it started with checkpoints on\?\)")
    assert str(tmp_path) in msg
    one_line_error(tmp_path / "absent", "has no checkpoint/")


def test_a_truncated_tensor_file_is_refused(tmp_path):
    where = save_checkpoint(tmp_path, ckpt(0))
    path = where / "tensors.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    before = listing(tmp_path)
    msg = one_line_error(tmp_path, "truncated")
    assert "tensors.safetensors" in msg
    assert listing(tmp_path) == before  # load never touches anything


def test_a_corrupted_byte_is_refused(tmp_path):
    where = save_checkpoint(tmp_path, ckpt(0))
    path = where / "tensors.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert "tensors.safetensors" in one_line_error(tmp_path, "corrupt: sha256")


def test_a_tensor_file_safetensors_cannot_parse_is_refused(tmp_path):
    where = save_checkpoint(tmp_path, ckpt(0))
    path, meta_path = where / "tensors.safetensors", where / "checkpoint.json"
    path.write_bytes(b"\xff" * 64)  # consistent with the JSON below, but no safetensors file
    meta = json.loads(meta_path.read_text())
    meta["tensors"].update(bytes=64, sha256=ck._sha256(path)[0])
    meta_path.write_text(json.dumps(meta))
    one_line_error(tmp_path, "not a valid safetensors file")


def test_missing_files_bad_json_and_other_versions_are_refused(tmp_path):
    where = save_checkpoint(tmp_path, ckpt(0))
    meta_path = where / "checkpoint.json"
    good = meta_path.read_text()
    (where / "tensors.safetensors").rename(where / "moved")
    assert "tensors.safetensors is missing" in one_line_error(tmp_path, "missing")
    (where / "moved").rename(where / "tensors.safetensors")
    meta_path.write_text(good[: len(good) // 2])
    one_line_error(tmp_path, r"checkpoint\.json is not valid JSON")
    meta = json.loads(good)
    for change, match in [
        ({"version": 2}, "format version 2; this fedcore reads version 1"),
        ({"version": None}, "format version None"),
        ({"round": -1}, "round must be"),
        ({"state": [1]}, "state must be an object"),
        ({"tensors": {**meta["tensors"], "file": "../elsewhere"}}, "plain file name"),
        ({"tensors": {"file": "tensors.safetensors"}}, "sha256"),
    ]:
        meta_path.write_text(json.dumps({**meta, **change}))
        one_line_error(tmp_path, match)
    meta_path.write_text("[]")
    one_line_error(tmp_path, "JSON object")
    meta_path.unlink()
    one_line_error(tmp_path, r"checkpoint\.json is missing")
    shutil.rmtree(where)
    (tmp_path / "checkpoint").write_text("not a directory")
    one_line_error(tmp_path, "not a directory")


def test_what_cannot_be_saved_is_refused_before_anything_changes(tmp_path):
    save_checkpoint(tmp_path, ckpt(0))
    before = listing(tmp_path)
    with pytest.raises(TypeError, match="JSON-ready"):
        save_checkpoint(tmp_path, Checkpoint(round=1, tensors={}, state={"x": object()}))
    with pytest.raises(TypeError, match="torch.Tensor"):
        save_checkpoint(tmp_path, Checkpoint(round=1, tensors={"x": [1.0]}, state={}))
    with pytest.raises(ValueError, match="round"):
        save_checkpoint(tmp_path, Checkpoint(round=-1, tensors={}, state={}))
    assert listing(tmp_path) == before
    # no tensors at all is a checkpoint, too
    save_checkpoint(tmp_path, Checkpoint(round=0, tensors={}, state={}))
    assert load_checkpoint(tmp_path) == Checkpoint(round=0, tensors={}, state={})
