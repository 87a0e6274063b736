"""Resume through the command line: kill -9 the server after round k, resume the run directory
(`fedcore run --resume` / `fedcore serve --resume`), and the final global weights and the losses
are bit for bit those of an uninterrupted run (fedit, fedbcd, parablock, fedcybgd, fibecfed,
split sequential). A truncated or missing checkpoint, a finished run and
a config its method cannot resume are refused with one line and exit code 2."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from fedcore.algorithms import get_algorithm
from fedcore.config import read_toml
from fedcore.runtime import run_threads
from fedcore.runtime.checkpoint import load_checkpoint
from fedcore.runtime.metrics import read_metrics

from .conftest import TINY, cli, free_port, join_args, run_cli, with_transport, write_config
from .test_serve_join import make_keys

LEASE_S = 5.0
ROUNDS = 8
KILL_AFTER = 2  # rounds complete at the kill (at least)

FEDIT = with_transport(
    {
        **TINY["fedit"],
        "train": {"clients": 3, "rounds": ROUNDS, "local_steps": 3, "batch_size": 8},
        "participation": 0.67,  # 2 of 3 a round: the sampler's RNG state must survive the restart
    },
    kind="zmq",
    curve=True,
    lease_s=LEASE_S,
)
FEDBCD = with_transport(
    {**TINY["fedbcd"], "clients": 3, "rounds": ROUNDS, "participation": 0.67, "local_steps": 3},
    kind="zmq",
    curve=True,
    lease_s=LEASE_S,
)
SPLIT = with_transport(
    {**TINY["split"], "train": {"clients": 2, "rounds": ROUNDS, "local_steps": 2, "batch_size": 8}},
    kind="zmq",
    curve=True,
    lease_s=LEASE_S,
)  # sequential, int8+noise on h_A: the codec's noise stream must survive the restart too
BCD = {  # ParaBlock with the gradient schedule: the block scores must survive the restart too
    method: with_transport(
        {**TINY[method], "clients": 3, "rounds": ROUNDS, "participation": 0.67, "local_steps": 3, **extra},
        kind="zmq",
        curve=True,
        lease_s=LEASE_S,
    )
    for method, extra in (("parablock", {"schedule": "gradient"}), ("fedcybgd", {}))
}
FIBECFED = with_transport(
    {**TINY["fibecfed"], "clients": 3, "per_round": 2, "rounds": ROUNDS, "eval_clients": 2},
    kind="zmq",
    curve=True,
    lease_s=LEASE_S,
)
CONFIGS = {
    "fedit": FEDIT,
    "fedbcd": FEDBCD,
    **BCD,
    "fibecfed": FIBECFED,
    "split": SPLIT,  # the other split modes: tests/algorithms/split/test_resume.py (thread runner)
}


def launch(args: list[str], cwd: Path, log: str) -> subprocess.Popen:
    """``fedcore ARGS`` in a session of its own (its client processes with it), output to files."""
    env = dict(os.environ, PYTHONSAFEPATH="1", COLUMNS="120")
    out, err = open(cwd / f"{log}.out", "w"), open(cwd / f"{log}.err", "w")
    try:
        return subprocess.Popen([cli(), *args], cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True)
    finally:
        out.close()
        err.close()


def only_run_dir(out: Path, timeout: float = 120.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(out.iterdir()) if out.is_dir() else []
        if found:
            (run_dir,) = found
            return run_dir
        time.sleep(0.05)
    raise AssertionError(f"no run directory under {out} within {timeout} s")


def kill_after_round(proc: subprocess.Popen, run_dir: Path, k: int, timeout: float = 240.0) -> int:
    """SIGKILL ``proc`` once ``run_dir``'s checkpoint holds >= ``k`` rounds; the rounds it held."""
    meta = run_dir / "checkpoint" / "checkpoint.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be killed"
        try:
            done = json.loads(meta.read_text())["round"]
        except (OSError, ValueError, KeyError):  # not written yet, or between two renames
            done = -1
        if done >= k:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return done
        time.sleep(0.002)
    raise AssertionError(f"no checkpoint of round {k} within {timeout} s")


def reap(*procs: subprocess.Popen) -> None:
    """Kill what is left of each process's session (the orphaned clients of a killed server)."""
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def final_state(run_dir: Path) -> tuple[dict[str, torch.Tensor], list[float], list[dict[str, Any]]]:
    """The last checkpoint's tensors (the final global model or adapter), the run's losses and
    its round records without their seconds."""
    ckpt = load_checkpoint(run_dir)
    assert ckpt.round == ROUNDS
    records = read_metrics(run_dir / "metrics.jsonl")
    (summary,) = [r for r in records if r["type"] == "summary"]
    kind = "step" if any(r["type"] == "step" for r in records) else "round"  # split: per-step records
    rounds = [{k: v for k, v in r.items() if "seconds" not in k} for r in records if r["type"] == kind]
    assert len(rounds) >= ROUNDS
    return ckpt.tensors, summary["losses"], rounds


def assert_same_run(resumed: Path, reference: Path) -> None:
    got, got_losses, got_rounds = final_state(resumed)
    want, want_losses, want_rounds = final_state(reference)
    assert sorted(got) == sorted(want) and len(got) > 0
    for name in want:  # bit for bit
        assert got[name].dtype == want[name].dtype and torch.equal(got[name], want[name]), name
    assert got_losses == want_losses and got_rounds == want_rounds


_REFERENCES: dict[str, Path] = {}


@pytest.fixture
def reference(request, tmp_path_factory) -> Path:
    """An uninterrupted `fedcore run` of ``CONFIGS[request.param]`` (process runner, CURVE), once."""
    name = getattr(request, "param", "fedit")
    if name not in _REFERENCES:
        root = tmp_path_factory.mktemp(f"reference-{name}")
        config = write_config(root / "job.toml", CONFIGS[name])
        done = run_cli(["run", str(config), "--out", str(root / "runs")], root, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        _REFERENCES[name] = only_run_dir(root / "runs")
    return _REFERENCES[name]


@pytest.mark.parametrize("reference", sorted(CONFIGS), indirect=True)
def test_run_killed_after_round_k_resumes_to_the_uninterrupted_weights(tmp_path, reference):
    tables = read_toml(reference.parent.parent / "job.toml")
    config = write_config(tmp_path / "job.toml", tables)
    proc = launch(["run", str(config), "--out", str(tmp_path / "runs")], tmp_path, "first")
    try:
        run_dir = only_run_dir(tmp_path / "runs")
        done = kill_after_round(proc, run_dir, KILL_AFTER)
    finally:
        reap(proc)
    assert KILL_AFTER <= done < ROUNDS and not (run_dir / "metrics.jsonl").exists()
    resumed = run_cli(["run", "--resume", str(run_dir)], tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"after round {done}" in resumed.stdout
    assert_same_run(run_dir, reference)


def join(config: Path, address: str, server_key: Path, keys: Path, k: int, cwd: Path, log: str) -> subprocess.Popen:
    return launch(join_args(config, address, server_key, keys, k), cwd, log)


def test_serve_killed_after_round_k_resumes_with_rejoined_clients(tmp_path, reference):
    """`fedcore serve` dies (kill -9); its clients exit; `fedcore serve --resume` keeps the server
    key of the run directory, the clients join again and the run ends as the uninterrupted one."""
    clients = FEDIT["train"]["clients"]
    config = write_config(tmp_path / "job.toml", FEDIT)
    keys, allowed = make_keys(tmp_path, clients, by_cli=False)
    address = f"tcp://127.0.0.1:{free_port()}"
    serve_args = ["--bind", address, "--allow", str(allowed)]
    server = launch(["serve", str(config), *serve_args, "--out", str(tmp_path / "runs")], tmp_path, "serve")
    run_dir = only_run_dir(tmp_path / "runs")
    server_key = run_dir / "keys" / "server.key"  # made by serve in its run directory
    deadline = time.monotonic() + 60
    while not server_key.is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    joins = [join(config, address, server_key, keys, k, tmp_path, f"join{k}") for k in range(clients)]
    try:
        done = kill_after_round(server, run_dir, KILL_AFTER)
        for j in joins:  # each client notices within its lease and gives up
            assert j.wait(timeout=LEASE_S + 30) != 0
    finally:
        reap(server, *joins)
    assert KILL_AFTER <= done < ROUNDS
    public_before = server_key.read_bytes()
    server = launch(["serve", "--resume", str(run_dir), *serve_args], tmp_path, "serve2")
    joins = [join(config, address, server_key, keys, k, tmp_path, f"rejoin{k}") for k in range(clients)]
    try:
        assert server.wait(timeout=300) == 0, (tmp_path / "serve2.err").read_text()[-3000:]
        for k, j in enumerate(joins):
            assert j.wait(timeout=60) == 0, (tmp_path / f"rejoin{k}.err").read_text()[-3000:]
    finally:
        reap(server, *joins)
    assert server_key.read_bytes() == public_before
    assert f"after round {done}" in (tmp_path / "serve2.out").read_text()
    assert_same_run(run_dir, reference)


def one_line_refusal(args: list[str], cwd: Path, message: str) -> None:
    done = run_cli(args, cwd)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_a_damaged_or_finished_run_is_refused_with_one_line(tmp_path, reference):
    # the reference run finished: nothing to resume
    one_line_refusal(["run", "--resume", str(reference)], tmp_path, "finished")
    # an interrupted copy of it with its tensors truncated
    broken = tmp_path / "broken"
    shutil.copytree(reference, broken)
    (broken / "metrics.jsonl").unlink()
    tensors = broken / "checkpoint" / "tensors.safetensors"
    before = tensors.read_bytes()
    tensors.write_bytes(before[: len(before) // 2])
    one_line_refusal(["run", "--resume", str(broken)], tmp_path, "is truncated")
    one_line_refusal(["serve", "--resume", str(broken)], tmp_path, "is truncated")
    assert tensors.read_bytes() == before[: len(before) // 2]  # refused, never replaced
    shutil.rmtree(broken / "checkpoint")
    one_line_refusal(["run", "--resume", str(broken)], tmp_path, "has no checkpoint/")
    one_line_refusal(["run", "--resume", str(tmp_path / "nowhere")], tmp_path, "config.json is missing")
    one_line_refusal(["run", str(tmp_path / "x.toml"), "--resume", str(broken)], tmp_path, "drop the config")


def test_a_config_its_method_cannot_resume_is_refused_with_one_line(tmp_path):
    """ParaBlock resumes with staleness 1 only: a run directory of staleness 2 (holding a
    staleness-1 checkpoint) is refused by both commands before any client starts."""
    run_dir = tmp_path / "parablock-run"
    spec = get_algorithm("parablock")
    run_threads(spec.config_from_dict({**TINY["parablock"], "rounds": 3}), run_dir=run_dir)
    stale = spec.config_from_dict({**TINY["parablock"], "rounds": 3, "staleness": 2})
    (run_dir / "config.json").write_text(json.dumps(spec.config_to_dict(stale)))
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    for args in (["run"], ["serve", "--allow", str(allowed), "--bind", f"tcp://127.0.0.1:{free_port()}"]):
        one_line_refusal([*args, "--resume", str(run_dir)], tmp_path, "parablock resumes with staleness = 1 only")
