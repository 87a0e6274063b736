"""`fedcore serve` and N x `fedcore join` as separate OS processes through the command line, on
loopback, as a user on several hosts would run them: keys made with `fedcore keys`, the same config
file on every "host", and the same losses as the fedcore-launched run of that config; with
--min-clients a run starts without the clients that did not join."""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path

import pytest
from fedcore.transport import allow, save_keypair

from fedcore.algorithms import get_algorithm
from fedcore.runtime import run_threads
from fedcore.runtime.metrics import read_metrics

from .conftest import TINY, free_port, join_args, run_cli, start, with_transport, write_config


def make_keys(root: Path, clients: int, *, by_cli: bool) -> tuple[Path, Path]:
    """The server's keypair and each client's, with the clients' public keys in ``allow/``."""
    keys, allowed = root / "keys", root / "allow"
    allowed.mkdir()
    if by_cli:  # what a user types on each host
        for name in ["server", *(f"client-{k}" for k in range(clients))]:
            done = run_cli(["keys", "new", name, "--dir", str(keys)], root)
            assert done.returncode == 0, done.stderr
        for k in range(clients):
            done = run_cli(["keys", "allow", str(allowed), str(keys / f"client-{k}.key")], root)
            assert done.returncode == 0, done.stderr
    else:
        save_keypair(keys, "server")
        for k in range(clients):
            public, _ = save_keypair(keys, f"client-{k}")
            allow(allowed, public)
    return keys, allowed


def serve_and_join(tmp_path: Path, tables: dict, *, by_cli: bool = False, timeout: float = 240.0) -> list[dict]:
    """Run ``tables`` as one `fedcore serve` and `fedcore join` per client; the server's records."""
    clients = get_algorithm(tables["algorithm"]).config_from_dict(tables).num_clients
    config = write_config(tmp_path / "job.toml", with_transport(tables, kind="zmq", curve=True, lease_s=20.0))
    keys, allowed = make_keys(tmp_path, clients, by_cli=by_cli)
    address = f"tcp://127.0.0.1:{free_port()}"
    server = start(
        ["serve", str(config), "--bind", address, "--allow", str(allowed), "--key", str(keys / "server.key_secret"),
         "--out", str(tmp_path / "runs")],
        tmp_path,
    )  # fmt: skip
    joins = [start(join_args(config, address, keys / "server.key", keys, k), tmp_path) for k in range(clients)]
    try:
        out, err = server.communicate(timeout=timeout)
        assert server.returncode == 0, err[-3000:]
        for j in joins:
            _, jerr = j.communicate(timeout=60)
            assert j.returncode == 0, jerr[-3000:]
    finally:
        for p in (server, *joins):
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert f"listening at {address}" in out and "server public key" in out
    (run_dir,) = (tmp_path / "runs").iterdir()
    return read_metrics(run_dir / "metrics.jsonl")


@pytest.mark.parametrize("name", sorted(TINY))
def test_serve_and_join_give_the_losses_of_the_local_run(tmp_path, name):
    records = serve_and_join(tmp_path, TINY[name], by_cli=name == "split")
    (summary,) = [r for r in records if r["type"] == "summary"]
    assert records[0]["type"] == "config" and records[0]["algorithm"] == name
    spec = get_algorithm(name)
    local = run_threads(spec.config_from_dict(with_transport(TINY[name], kind="inprocess")))
    assert summary["losses"] == local.report.losses  # bit for bit (JSON keeps float64 exactly)
    assert summary["transport"] == "zmq+curve"


def test_a_client_exits_with_one_line_when_the_server_dies(tmp_path):
    """kill -9 the server mid-round: every client process exits non-zero within lease_s + 5 s."""
    lease = 4.0
    tables = with_transport(
        {**TINY["split"], "train": {**TINY["split"]["train"], "rounds": 200}}, kind="zmq", curve=True, lease_s=lease
    )
    config = write_config(tmp_path / "job.toml", tables)
    keys, allowed = make_keys(tmp_path, 2, by_cli=False)
    address = f"tcp://127.0.0.1:{free_port()}"
    server = start(["serve", str(config), "--bind", address, "--allow", str(allowed), "--out", str(tmp_path / "runs"),
                    "--key", str(keys / "server.key_secret")], tmp_path)  # fmt: skip
    joins = [start(join_args(config, address, keys / "server.key", keys, k), tmp_path) for k in range(2)]
    try:
        assert server.stdout is not None
        for line in server.stdout:  # the run is under way once both clients are in
            if "client 1 connected" in line or "client 0 connected (2/2)" in line:
                break
        time.sleep(3.0)  # a few rounds in
        assert server.poll() is None and all(j.poll() is None for j in joins)
        server.kill()  # SIGKILL: no goodbye
        killed = time.monotonic()
        for j in joins:
            _, err = j.communicate(timeout=lease + 30)
            assert time.monotonic() - killed < lease + 5.0
            assert j.returncode == 3, err[-2000:]
            last = err.strip().splitlines()[-1]
            assert last.startswith("fedcore: client ") and "lost the server" in last, err[-2000:]
            assert "Traceback" not in err
    finally:
        for p in (server, *joins):
            if p.poll() is None:
                p.kill()
            p.communicate()


def test_join_refuses_bad_arguments_with_one_line(tmp_path):
    config = write_config(tmp_path / "job.toml", TINY["split"])
    for args, message in [
        (["--index", "7"], "--index must be in [0, 1]"),
        (
            ["--index", "0", "--key", str(tmp_path / "nobody"), "--server-key", str(tmp_path / "s.key")],
            "does not exist",
        ),
        (["--index", "0"], "needs --key NAME"),
    ]:
        done = run_cli(["join", str(config), "--server", "tcp://127.0.0.1:1", *args], tmp_path)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def serve_some(tmp_path: Path, tables: dict, joined: list[int], extra: list[str]) -> tuple[subprocess.Popen, list]:
    """`fedcore serve` with ``extra`` arguments and `fedcore join` for the clients ``joined`` only."""
    clients = get_algorithm(tables["algorithm"]).config_from_dict(tables).num_clients
    config = write_config(tmp_path / "job.toml", with_transport(tables, kind="zmq", curve=True, lease_s=20.0))
    keys, allowed = make_keys(tmp_path, clients, by_cli=False)
    address = f"tcp://127.0.0.1:{free_port()}"
    server = start(["serve", str(config), "--bind", address, "--allow", str(allowed), "--out", str(tmp_path / "runs"),
                    "--key", str(keys / "server.key_secret"), *extra], tmp_path)  # fmt: skip
    joins = [start(join_args(config, address, keys / "server.key", keys, k), tmp_path) for k in joined]
    return server, joins


@pytest.mark.parametrize("name", sorted(TINY))
def test_min_clients_starts_without_the_ones_that_did_not_join(tmp_path, name):
    """--min-clients 1 of 2 and --wait-s 3: only client 0 joins; the run starts at the deadline
    with client 1 out of it from the start (reported dropped) and ends normally."""
    server, joins = serve_some(tmp_path, TINY[name], [0], ["--min-clients", "1", "--wait-s", "3"])
    try:
        out, err = server.communicate(timeout=240)
        assert server.returncode == 0, err[-3000:]
        _, jerr = joins[0].communicate(timeout=60)
        assert joins[0].returncode == 0, jerr[-3000:]
    finally:
        for p in (server, *joins):
            if p.poll() is None:
                p.kill()
            p.communicate()
    assert "starting with 1 of 2 clients; not joined: [1]" in out
    (run_dir,) = (tmp_path / "runs").iterdir()
    (summary,) = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["type"] == "summary"]
    assert json.dumps(summary).count("did not join before the run started") >= 1, summary
    assert any(isinstance(x, float) and math.isfinite(x) for x in summary["losses"]), summary["losses"]


def test_too_few_clients_is_one_line_and_exit_code_1(tmp_path):
    server, joins = serve_some(tmp_path, TINY["fedit"], [0], ["--min-clients", "2", "--wait-s", "3"])
    try:
        _, err = server.communicate(timeout=60)
    finally:
        for p in (server, *joins):
            if p.poll() is None:
                p.kill()
            p.communicate()
    assert server.returncode == 1, err
    want = "fedcore serve: only 1 clients connected within 3.0 s; the run needs 2 (--min-clients) of 2"
    assert err.strip().splitlines() == [want]
