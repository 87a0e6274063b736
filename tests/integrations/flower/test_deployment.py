"""fedcore in Flower's deployment engine: ``flower-superlink`` and two ``flower-supernode``s on
loopback as separate OS processes (insecure mode, loopback only), the app in examples/flower
submitted with ``flwr run``. Split learning (client-batch) runs in the control-plane mode, every h_A
on fedcore's CURVE link; FedIT runs as the native strategy. Both give fedcore's own losses. Every
process the test starts, and every process those start, is stopped by its pid."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedcore.runtime.job import load_job_config
from fedcore.runtime.runner import run_threads

pytestmark = pytest.mark.timeout(420)

BIN = Path(sys.executable).parent
APP = Path(__file__).resolve().parents[3] / "examples" / "flower"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{proc.args[0]} exited early ({proc.returncode})"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port} after {timeout} s")


def descendants(pid: int) -> set[int]:
    table = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True, check=True).stdout
    children: dict[int, list[int]] = {}
    for line in table.splitlines():
        p, pp = map(int, line.split())
        children.setdefault(pp, []).append(p)
    found, stack = set(), [pid]
    while stack:
        for c in children.get(stack.pop(), []):
            found.add(c)
            stack.append(c)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Path]]:
    """A SuperLink and two SuperNodes (partition-id 0 and 1); yields (env for ``flwr``, a folder)."""
    work = tmp_path_factory.mktemp("flower")
    home, port, node_ports = work / "flwr_home", free_port(), [free_port(), free_port()]
    home.mkdir()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    env = {
        **os.environ,
        "FLWR_HOME": str(home),  # the CLI's connections and the installed apps
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # flower-superexec, flwr-serverapp, flwr-clientapp
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1",
        "PYTHONSAFEPATH": "1",
        "OMP_NUM_THREADS": "1",
    }
    procs: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> subprocess.Popen:
        log = open(work / f"{name}.log", "w")  # noqa: SIM115 - closed at teardown with the process
        proc = subprocess.Popen(args, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        return proc

    try:
        no_uv = "--disable-runtime-dependency-installation"  # torch and fedcore are installed: no per-run venv
        link = start("superlink", str(BIN / "flower-superlink"), "--insecure", no_uv,
                     "--host", "127.0.0.1", "--port", str(port))  # fmt: skip
        wait_port(port, link)
        for k, node_port in enumerate(node_ports):
            node = start(f"supernode-{k}", str(BIN / "flower-supernode"), "--insecure",
                         "--superlink", f"127.0.0.1:{port}", "--host", "127.0.0.1", "--port", str(node_port),
                         "--node-config", f"partition-id={k} num-partitions=2")  # fmt: skip
            wait_port(node_port, node)
        yield env, work
    finally:
        spawned = set().union(*(descendants(p.pid) for p in procs)) if procs else set()
        for p in reversed(procs):  # the SuperNodes first, then the SuperLink
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for pid in spawned:  # SuperExecs and apps notice a dead parent only by polling
            if alive(pid):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(pid) for pid in spawned):
            time.sleep(0.2)
        for pid in spawned:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        assert not [pid for pid in spawned if alive(pid)]


def flwr_run(env: dict[str, str], work: Path, name: str, **run_config: str) -> dict:
    """``flwr run examples/flower`` with ``run_config`` overrides; returns the run's result JSON."""
    result = work / f"{name}.json"
    overrides = " ".join(f"{k}='{v}'" for k, v in {**run_config, "flower.result": str(result)}.items())
    proc = subprocess.run(
        [str(BIN / "flwr"), "run", str(APP), "local", "--stream", "--run-config", overrides],
        env=env, cwd=work, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (work / f"{name}.out").write_text(proc.stdout + proc.stderr)
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert result.is_file(), f"the run wrote no result (exit {proc.returncode}):\n{tail}"
    return json.loads(result.read_text())


def test_split_client_batch_in_control_plane_mode(deployment: tuple[dict[str, str], Path]) -> None:
    env, work = deployment
    got = flwr_run(env, work, "split", config=str(APP / "split.toml"), **{"flower.outputs": "false"})
    own = run_threads(load_job_config(APP / "split.toml")).report
    assert got["transport"] == "flower+zmq+curve"
    assert got["losses"] == pytest.approx(own.losses, abs=1e-6)
    wire = got["wire"]["received"]  # counted at fedcore's server: the hidden states crossed its link
    assert wire["h_A"] > 0 and wire["lora_up"] > 0


def test_fedit_as_a_flower_strategy(deployment: tuple[dict[str, str], Path]) -> None:
    env, work = deployment
    got = flwr_run(env, work, "fedit", config=str(APP / "fedit.toml"), **{"flower.outputs": "false"})
    own = run_threads(load_job_config(APP / "fedit.toml")).result
    assert got["transport"] == "flower"
    assert got["summary"]["round_loss"] == pytest.approx(own.round_loss, abs=1e-6)
    assert got["losses"] == pytest.approx(own.eval_end, abs=1e-6)
