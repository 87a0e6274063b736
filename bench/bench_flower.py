"""fedcore inside Flower (fedcore.integrations.flower) against fedcore's own runners, on one tiny model.

1. FedIT round time: one tiny FedIT config (3 clients x 3 rounds, LoRA r=4 on q,v, hidden 32, 4
   layers) with fedcore's runners (threads; a server here and one process per client over CURVE)
   and as a Flower strategy in Flower's simulation engine (Ray). A round: its training (adapter
   down, local steps, adapters up, the average), median over the rounds; fedcore's between its
   server's progress events, Flower's from ``configure_train`` to ``aggregate_train``'s return
   (``RoundClock``, through ``fedit_server_app(wrap=...)``). Apart: the server role's or strategy's
   wall time / rounds (the strategy's counts from its creation: the wait for Ray's workers is in
   it) and the whole ``run_simulation`` call. Flower's losses are checked against fedcore's.
2. Split step time: one tiny split config (client-batch mode, 2 clients) with fedcore's runners,
   in the control-plane mode (Flower finds the nodes and hands out CURVE keys, every h_A crosses
   fedcore's link) in Flower's simulation engine and in its deployment engine (flower-superlink and
   two flower-supernode processes on loopback, ``flwr run examples/flower``). A step's time is the
   median of the clients' own step times (head forward to the end of its backward, h_A, h_B, dh_B
   and dh_A included) over the run's steps.
3. Per-step Flower messages: what split learning would cost with one Flower message per step
   instead: an app written here (the module source ``STEP_APP``) sends every node an ArrayRecord of
   h_A's size each "step" and gets a same-size dh_B back, in simulation and in deployment, with
   ``push_messages`` / ``pull_messages`` polled every 0.05 s and with ``grid.send_and_receive``
   (which sleeps 3 s between pulls in deployment). One such round trip is a lower bound on a split
   step: the server cannot answer h_A with h_B inside one reply, so a step needs two.
4. Bytes: fedcore's link counts per tag (``wire``) and Flower's ArrayRecord payload bytes.

Every process of every variant runs one torch thread (OMP_NUM_THREADS=1, set here and inherited).

    cd /tmp && PYTHONSAFEPATH=1 python /work/main/bench/bench_flower.py            # ~9 minutes on 2 cores
    cd /tmp && PYTHONSAFEPATH=1 python /work/main/bench/bench_flower.py --quick    # one repeat: a smoke run

(from a folder outside the checkout, with PYTHONSAFEPATH=1: Ray puts the working folder on its
workers' ``sys.path``, and the checkout's ``kernels/`` shadows a package transformers looks for).
Writes bench/results/flower-<device>.json (../shared/BENCH.md's shape); ``--quick`` runs are not
written unless ``--out`` is given. Every process the script starts, and every process those
start, is stopped by its pid.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # Ray's FutureWarning about GPU env vars
# One torch thread in every process of every variant (this one, fedcore's client processes, Ray's
# workers, the deployment's): 2 cores and 3 or more busy processes. With torch's default 2 threads
# here, fedcore's server role and its 2 client processes fight for the cores and a split step takes
# 0.3 - 1 s instead of 0.03 s (measured on this machine), which would be no comparison at all.
os.environ["OMP_NUM_THREADS"] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import goal, write_results  # noqa: E402

from fedcore.algorithms import get_algorithm  # noqa: E402
from fedcore.config.toml import dump_toml  # noqa: E402
from fedcore.runtime.runner import RunOutcome, run_processes, run_threads  # noqa: E402

CLIENT_THREADS = "every process, server and clients, fedcore's and Flower's: OMP_NUM_THREADS=1"

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "examples" / "flower"
BIN = Path(sys.executable).parent
MIB = 2**20
BIG = 3 * MIB // 4  # 0.75 MiB: the size of NOTES-flower's 6.1 s per send_and_receive in deployment

TINY_MODEL = {"hidden_size": 32, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2}
TINY_DATA = {"train_per_client": 16, "eval_per_client": 8, "max_len": 32, "dirichlet_alpha": 0.5}
FEDIT = {  # tests/integrations/flower/conftest.py's tiny FedIT, 3 rounds
    "algorithm": "fedit",
    "model": TINY_MODEL,
    "data": TINY_DATA,
    "lora": {"r": 4, "alpha": 8.0, "targets": ["q", "v"]},
    "train": {"clients": 3, "rounds": 3, "local_steps": 2, "batch_size": 8},
    "round_timeout_s": 120.0,
}
SPLIT = {  # the tests' tiny split (client-batch), 2 clients, 4 local steps a round
    "algorithm": "split",
    "model": {**TINY_MODEL, "num_layers": 3},
    "data": TINY_DATA,
    "lora": {"r": 4, "alpha": 8.0},
    "split": {"mode": "client-batch"},
    "train": {"clients": 2, "rounds": 2, "local_steps": 4, "batch_size": 8},
}
SPLIT_STEPS = SPLIT["train"]["rounds"] * SPLIT["train"]["local_steps"]  # client-batch: one gathered step each
THREADS = {"kind": "inprocess"}
PROCESSES = {"kind": "zmq", "curve": True}

# ---------------------------------------------------------------- the per-step message app
STEP_APP = '''"""Per-step Flower messages (written by fedcore's bench/bench_flower.py): every "step" the
ServerApp sends each node an ArrayRecord of h_A's size and waits for a same-size dh_B back."""

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

STEP = "query.fedcore_bench_step"


def payload_bytes(record):
    return sum(int(a.numpy().nbytes) for a in record.values())


def round_trip(grid, nodes, nbytes, mode, poll_s):
    """Seconds from pushing one step message to every node to the last reply; the reply bytes."""
    msgs = [
        Message(RecordDict({"h_A": ArrayRecord([np.zeros(nbytes // 4, np.float32)])}), dst_node_id=n, message_type=STEP)
        for n in nodes
    ]
    t0 = time.perf_counter()
    if mode == "send_and_receive":
        replies = list(grid.send_and_receive(msgs, timeout=300.0))
    else:
        pending, replies, deadline = set(grid.push_messages(msgs)), [], time.monotonic() + 300.0
        while pending and time.monotonic() < deadline:
            for reply in grid.pull_messages(list(pending)):
                pending.discard(reply.metadata.reply_to_message_id)
                replies.append(reply)
            if pending:
                time.sleep(poll_s)
    seconds = time.perf_counter() - t0
    if len(replies) != len(nodes) or any(r.has_error() for r in replies):
        errors = [r.error.reason for r in replies if r.has_error()]
        raise RuntimeError(f"{len(replies)} replies of {len(nodes)}: {errors}")
    return seconds, sum(payload_bytes(r.content.array_records["dh_B"]) for r in replies)


def run_bench(grid, p):
    deadline, want = time.monotonic() + 120.0, int(p["nodes"])
    while len(list(grid.get_node_ids())) < want and time.monotonic() < deadline:
        time.sleep(0.1)
    nodes = sorted(int(n) for n in grid.get_node_ids())[:want]
    out = {"nodes": len(nodes), "cases": []}
    for nbytes in (int(x) for x in str(p["sizes"]).split(",")):
        for mode in str(p["modes"]).split(","):
            steps = int(p["steps"] if mode == "push_pull" else p["sr_steps"])
            seconds, down = [], 0
            for i in range(int(p["warmup"]) + steps):
                s, down = round_trip(grid, nodes, nbytes, mode, float(p["poll_s"]))
                if i >= int(p["warmup"]):
                    seconds.append(s)
            out["cases"].append({"nbytes": nbytes, "mode": mode, "seconds": seconds,
                                 "up_bytes": nbytes // 4 * 4 * len(nodes), "down_bytes": down})
    Path(str(p["result"])).write_text(json.dumps(out))


def make_server_app(params=None):
    """The ServerApp (``params``: the run_config's keys; default: the run's ``run_config``)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_bench(grid, dict(params if params is not None else context.run_config))

    return app


client_app = ClientApp()


@client_app.query("fedcore_bench_step")
def step(msg: Message, context: Context) -> Message:
    nbytes = payload_bytes(msg.content.array_records["h_A"])  # read it, as a split client would
    return Message(RecordDict({"dh_B": ArrayRecord([np.zeros(nbytes // 4, np.float32)])}), reply_to=msg)


server_app = make_server_app()
'''

STEP_PYPROJECT = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedcore-bench-flower-step"
version = "0.1.0"
description = "Per-step Flower messages (fedcore bench/bench_flower.py)"
license = "Apache-2.0"
dependencies = ["flwr[simulation]", "numpy"]

[tool.hatch.build.targets.wheel]
packages = ["{pkg}"]

[tool.flwr.app]
publisher = "fedcore"

[tool.flwr.app.components]
serverapp = "{pkg}.app:server_app"
clientapp = "{pkg}.app:client_app"

[tool.flwr.app.config]
sizes = "1024"
modes = "push_pull"
steps = 5
sr_steps = 2
warmup = 1
nodes = 2
poll_s = 0.05
result = ""
"""
STEP_PKG = "fedcore_bench_flower_step_app"  # a module name nothing else on a path has


def step_app_module() -> dict[str, Any]:
    """STEP_APP's namespace for the simulation engine, named ``__main__`` so that Ray's pickler
    ships its functions by value (the module is on no worker's path)."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(STEP_APP, "<bench_flower STEP_APP>", "exec"), namespace)  # noqa: S102 - our own source above
    return namespace


def write_step_app(folder: Path) -> Path:
    (folder / STEP_PKG).mkdir(parents=True)
    (folder / STEP_PKG / "__init__.py").write_text('"""Per-step Flower messages (bench_flower.py)."""\n')
    (folder / STEP_PKG / "app.py").write_text(STEP_APP)
    (folder / "pyproject.toml").write_text(STEP_PYPROJECT.replace("{pkg}", STEP_PKG))
    return folder


# ---------------------------------------------------------------- statistics
def spread(values: list[float], scale: float = 1.0, digits: int = 3) -> dict[str, float]:
    """median / min / max of ``values`` times ``scale``."""
    vals = [v * scale for v in values]
    return {
        "median": round(statistics.median(vals), digits),
        "min": round(min(vals), digits),
        "max": round(max(vals), digits),
    }


def timing(seconds: list[float]) -> dict[str, float]:
    """A row's time: ``ms`` (the median), ``ms_min``, ``ms_max``."""
    s = spread(seconds, 1e3, 1)
    return {"ms": s["median"], "ms_min": s["min"], "ms_max": s["max"]}


def max_abs_diff(a: list[float], b: list[float]) -> float:
    if len(a) != len(b):
        return math.inf
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)


def config_of(tables: dict[str, Any], **extra: Any) -> Any:
    merged = {**copy.deepcopy(tables), **copy.deepcopy(extra)}
    return get_algorithm(merged["algorithm"]).config_from_dict(merged)


def wire_totals(wire: dict[str, Any]) -> tuple[int, int]:
    """(bytes the server received, bytes it sent) over every tag."""
    return sum(wire.get("received", {}).values()), sum(wire.get("sent", {}).values())


# ---------------------------------------------------------------- Flower's simulation engine
def simulate(server_app: Any, client_app: Any, nodes: int, *, cpus_per_node: float = 1.0) -> float:
    """``run_simulation`` from the temporary folder (not the checkout: Ray puts the working folder on
    its workers' sys.path); returns the call's wall seconds, Ray's start and stop included."""
    from flwr.simulation import run_simulation

    here = os.getcwd()
    os.chdir(tempfile.gettempdir())
    t0 = time.perf_counter()
    try:
        resources = {"client_resources": {"num_cpus": cpus_per_node}}
        run_simulation(server_app, client_app, num_supernodes=nodes, backend_config=resources)
    finally:
        os.chdir(here)
    return time.perf_counter() - t0


# ---------------------------------------------------------------- Flower's deployment engine
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited early ({proc.returncode})")
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


@contextlib.contextmanager
def deployment(work: Path, nodes: int = 2) -> Iterator[dict[str, str]]:
    """A SuperLink and ``nodes`` SuperNodes (partition-id 0..nodes-1) on loopback, insecure, as
    tests/integrations/flower/test_deployment.py starts them; yields the env for ``flwr``."""
    home, port = work / "flwr_home", free_port()
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
    logs: list[Any] = []

    def start(name: str, *args: str) -> subprocess.Popen:
        log = open(work / f"{name}.log", "w")  # noqa: SIM115 - closed with the process below
        logs.append(log)
        proc = subprocess.Popen(args, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        return proc

    try:
        no_uv = "--disable-runtime-dependency-installation"  # torch and fedcore are installed: no per-run venv
        link = start("superlink", str(BIN / "flower-superlink"), "--insecure", no_uv,
                     "--host", "127.0.0.1", "--port", str(port))  # fmt: skip
        wait_port(port, link)
        for k in range(nodes):
            node_port = free_port()
            node = start(f"supernode-{k}", str(BIN / "flower-supernode"), "--insecure",
                         "--superlink", f"127.0.0.1:{port}", "--host", "127.0.0.1", "--port", str(node_port),
                         "--node-config", f"partition-id={k} num-partitions={nodes}")  # fmt: skip
            wait_port(node_port, node)
        yield env
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
        for log in logs:
            log.close()
        left = [pid for pid in spawned if alive(pid)]
        if left:
            print(f"warning: processes {left} outlived the deployment", file=sys.stderr)


def toml_value(value: Any) -> str:
    """A ``--run-config`` value: TOML booleans and numbers as they are (a quoted 'false' is a string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return f"'{value}'"


def flwr_run(env: dict[str, str], work: Path, app: Path, name: str, expect: Path, **run_config: Any) -> float:
    """``flwr run APP local --stream`` with ``run_config`` overrides; the command's wall seconds.
    ``RuntimeError`` with the output's tail when the run did not write ``expect``."""
    overrides = " ".join(f"{k}={toml_value(v)}" for k, v in run_config.items())
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(BIN / "flwr"), "run", str(app), "local", "--stream", "--run-config", overrides],
        env=env, cwd=work, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    (work / f"{name}.out").write_text(proc.stdout + proc.stderr)
    if not expect.is_file():
        raise RuntimeError(
            f"flwr run {name} wrote no result (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}"
        )
    return wall


# ---------------------------------------------------------------- 1. FedIT
def fedit_numbers(result: Any, rounds: int, round_s: list[float]) -> dict[str, Any]:
    return {
        "round_s": statistics.median(round_s) if round_s else math.nan,
        "wall_round_s": result.wall_seconds / rounds,
        "round_loss": list(result.round_loss),
        "losses": [*result.round_loss, *result.eval_start, *result.eval_end],
        "upload_bytes": list(result.upload_bytes),
        "download_bytes": list(result.download_bytes),
    }


class RoundClock:
    """When each of a Flower strategy's rounds starts (``configure_train``) and ends its training
    (``aggregate_train`` returns): ``wrap`` it in through ``fedit_server_app(wrap=...)``."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []

    def wrap(self, strategy: Any) -> Any:
        configure, aggregate = strategy.configure_train, strategy.aggregate_train

        def configure_train(*args: Any, **kw: Any) -> Any:
            self.starts.append(time.perf_counter())
            return configure(*args, **kw)

        def aggregate_train(*args: Any, **kw: Any) -> Any:
            out = aggregate(*args, **kw)
            self.ends.append(time.perf_counter())
            return out

        strategy.configure_train, strategy.aggregate_train = configure_train, aggregate_train
        return strategy

    def rounds(self) -> list[float]:
        return [e - s for s, e in zip(self.starts, self.ends, strict=False)]


def bench_fedit(repeats: int) -> tuple[list[dict], dict[str, Any]]:
    from fedcore.integrations.flower import fedit_client_app, fedit_server_app

    rounds, clients = FEDIT["train"]["rounds"], FEDIT["train"]["clients"]
    runs: dict[str, list[dict[str, Any]]] = {"fedcore threads": [], "fedcore processes": [], "flower simulation": []}
    for _ in range(repeats):
        for impl, fn, transport in (("fedcore threads", run_threads, THREADS),
                                    ("fedcore processes", run_processes, PROCESSES)):  # fmt: skip
            marks: list[float] = []  # the end of each round (fedcore's server reports progress after each)
            out = fn(
                config_of(FEDIT, transport=transport), on_progress=lambda _e, m=marks: m.append(time.perf_counter())
            )
            got = fedit_numbers(out.result, rounds, [b - a for a, b in zip(marks, marks[1:], strict=False)])
            up, down = wire_totals(out.wire)
            runs[impl].append({**got, "run_s": out.wall_seconds, "wire_up": up, "wire_down": down})
        cfg = config_of(FEDIT, transport=THREADS)
        outcomes: list[RunOutcome] = []
        clock = RoundClock()
        server = fedit_server_app(cfg, wrap=clock.wrap, on_outcome=outcomes.append)
        whole = simulate(server, fedit_client_app(cfg), clients)
        res = outcomes[0].result
        got = fedit_numbers(res, rounds, clock.rounds())
        adapter = res.download_bytes[0] // max(1, len(res.participants[0]))
        evals = 2 * clients * adapter  # evaluations carry the adapter to every node: before round 1, after the last
        runs["flower simulation"].append({**got, "run_s": outcomes[0].wall_seconds, "whole_s": whole,
                                          "wire_up": sum(res.upload_bytes),
                                          "wire_down": sum(res.download_bytes) + evals})  # fmt: skip
        print(f"fedit: repeat done ({whole:.1f} s in run_simulation)", flush=True)
    own = runs["fedcore threads"][0]["losses"]
    rows, summary = [], {}
    for impl, rs in runs.items():
        row = {
            "case": f"fedit {clients} clients x {rounds} rounds", "impl": impl,
            **timing([r["round_s"] for r in rs]), "repeats": len(rs),
            "per": ("round: its training (adapter down, local steps, adapters up, the average), median over "
                    "the rounds; fedcore: between its server's progress events after rounds; Flower: "
                    "configure_train to aggregate_train's return"),
            "wall_per_round_ms": spread([r["wall_round_s"] for r in rs], 1e3, 1),
            "run_wall_s": spread([r["run_s"] for r in rs]),
            "upload_bytes_per_round": rs[0]["upload_bytes"], "download_bytes_per_round": rs[0]["download_bytes"],
            "all_bytes_per_round": {"up": rs[0]["wire_up"] // rounds, "down": rs[0]["wire_down"] // rounds},
            "round_loss": rs[0]["round_loss"],
            "loss_max_abs_diff_vs_threads": max(max_abs_diff(r["losses"], own) for r in rs),
            "threads": CLIENT_THREADS,
        }  # fmt: skip
        if impl == "flower simulation":
            row["whole_run_wall_s"] = spread([r["whole_s"] for r in rs])  # run_simulation: Ray's start included
            row["wall_per_round_note"] = ("the strategy's wall time / rounds: from the strategy's creation, so the "
                                          "wait for Ray's workers (the first hello) is in it")  # fmt: skip
            row["note"] = ("all_bytes: ArrayRecord payloads of the train messages (counted) and of the two evaluations "
                           "(before the first round and after the last, as fedcore's; computed from the "
                           "adapter's size)")  # fmt: skip
        else:
            row["note"] = "all_bytes: fedcore's link, every tag (lora_down, lora_up, control, ack)"
            row["wall_per_round_note"] = "the server role's wall time / rounds (both evaluations in it)"
        rows.append(row)
        summary[impl] = row
    return rows, summary


# ---------------------------------------------------------------- 2. split
def split_numbers(steps: list[dict[str, Any]], wall: float, train: float | None, n_steps: int) -> dict[str, Any]:
    return {
        "step_s": statistics.median(s["seconds"] for s in steps),
        "train_per_step_s": train / n_steps if train is not None else None,
        "server_per_step_s": wall / n_steps,
    }


def outcome_split(out: RunOutcome, n_steps: int) -> dict[str, Any]:
    res = out.result
    steps = [{"seconds": s.seconds} for s in res.steps]
    got = split_numbers(steps, res.wall_seconds, res.extra.get("train_seconds"), n_steps)
    return {**got, "losses": list(out.report.losses), "wire": out.wire, "run_s": out.wall_seconds}


def split_runs(repeats: int) -> dict[str, list[dict[str, Any]]]:
    """SPLIT with fedcore's runners and in the control-plane mode in Flower's simulation engine."""
    from fedcore.integrations.flower import control_client_app, control_server_app

    runs: dict[str, list[dict[str, Any]]] = {"fedcore threads": [], "fedcore processes": [],
                                             "control plane, flower simulation": []}  # fmt: skip
    for i in range(repeats):
        runs["fedcore threads"].append(outcome_split(run_threads(config_of(SPLIT, transport=THREADS)), SPLIT_STEPS))
        out = run_processes(config_of(SPLIT, transport=PROCESSES))
        runs["fedcore processes"].append(outcome_split(out, SPLIT_STEPS))
        cfg = config_of(SPLIT, transport=PROCESSES)
        outcomes: list[RunOutcome] = []
        whole = simulate(control_server_app(cfg, on_outcome=outcomes.append), control_client_app(cfg),
                         SPLIT["train"]["clients"], cpus_per_node=0.5)  # fmt: skip
        runs["control plane, flower simulation"].append({**outcome_split(outcomes[0], SPLIT_STEPS), "whole_s": whole})
        print(f"split: repeat {i + 1} done ({whole:.1f} s in run_simulation)", flush=True)
    return runs


def split_rows(runs: dict[str, list[dict[str, Any]]]) -> tuple[list[dict], dict[str, Any]]:
    clients, rounds = SPLIT["train"]["clients"], SPLIT["train"]["rounds"]
    own = runs["fedcore threads"][0]["losses"]
    rows, summary = [], {}
    for impl, rs in runs.items():
        wire = rs[0]["wire"]
        row = {
            "case": f"split client-batch {clients} clients x {SPLIT_STEPS} steps", "impl": impl,
            **timing([r["step_s"] for r in rs]), "repeats": len(rs),
            "per": "step (median of the clients' own step times over the run)",
            "server_wall_per_step_ms": spread([r["server_per_step_s"] for r in rs], 1e3, 1),
            "run_wall_s": spread([r["run_s"] for r in rs]),
            "wire_bytes_per_round": {
                "received": {k: v // rounds for k, v in wire.get("received", {}).items()},
                "sent": {k: v // rounds for k, v in wire.get("sent", {}).items()},
            },
            "flower_array_bytes": 0 if "control plane" in impl else None,
            "threads": CLIENT_THREADS,
            "loss_max_abs_diff_vs_threads": max(max_abs_diff(r["losses"], own) for r in rs),
        }  # fmt: skip
        trains = [r["train_per_step_s"] for r in rs if r["train_per_step_s"] is not None]
        if trains:
            row["server_train_wall_per_step_ms"] = spread(trains, 1e3, 1)
        if "whole_s" in rs[0]:
            row["whole_run_wall_s"] = spread([r["whole_s"] for r in rs])
            row["note"] = "whole_run_wall_s: run_simulation (Ray) or flwr run, from the call to its end"
        rows.append(row)
        summary[impl] = row
    threads = runs["fedcore threads"][0]["wire"]
    summary["h_A_bytes"] = threads["received"]["h_A"] // threads["received_messages"]["h_A"]
    return rows, summary


def deployed_split(env: dict[str, str], work: Path, i: int) -> dict[str, Any]:
    """One control-plane split run of SPLIT through ``flwr run examples/flower`` (a fedcore TOML
    written here, with fedcore's run folder written under ``work`` for the step records)."""
    runs = work / f"split-runs-{i}"
    tables = {**copy.deepcopy(SPLIT), "transport": PROCESSES,
              "output": {"dir": str(runs), "plot": False, "checkpoint": False, "save_model": False}}  # fmt: skip
    toml = work / f"split-{i}.toml"
    toml.write_text(dump_toml(tables))
    result = work / f"split-{i}.json"
    whole = flwr_run(env, work, APP, f"split-{i}", result,
                     **{"config": str(toml), "flower.result": str(result), "flower.outputs": True})  # fmt: skip
    got = json.loads(result.read_text())
    (run_dir,) = runs.iterdir()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["type"] == "step"]
    numbers = split_numbers(steps, got["summary"]["wall_seconds"], None, SPLIT_STEPS)
    return {**numbers, "losses": got["losses"], "wire": got["wire"], "run_s": got["wall_seconds"], "whole_s": whole}


# ---------------------------------------------------------------- 3. per-step Flower messages
def step_params(sizes: list[int], steps: int, sr_steps: int, result: Path) -> dict[str, Any]:
    return {"sizes": ",".join(map(str, sizes)), "modes": "push_pull,send_and_receive", "steps": steps,
            "sr_steps": sr_steps, "warmup": 1, "nodes": 2, "poll_s": 0.05, "result": str(result)}  # fmt: skip


def step_rows(got: dict[str, Any], engine: str, whole: float) -> list[dict]:
    rows = []
    for c in got["cases"]:
        mode = "push/pull, 0.05 s poll" if c["mode"] == "push_pull" else "grid.send_and_receive"
        rows.append({
            "case": f"flower msg per step, {c['nbytes'] / 1024:.1f} KiB each way", "impl": f"{engine}, {mode}",
            **timing(c["seconds"]), "steps": len(c["seconds"]), "warmup_steps": 1, "nodes": got["nodes"],
            "per": "step: one message to every node and every reply back",
            "flower_array_bytes_per_step": {"down": c["up_bytes"], "up": c["down_bytes"]},
            "nbytes": c["nbytes"], "mode": c["mode"], "engine": engine, "whole_run_wall_s": round(whole, 1),
        })  # fmt: skip
    return rows


def steps_simulated(sizes: list[int], steps: int, sr_steps: int, work: Path) -> list[dict]:
    result = work / "steps-simulation.json"
    ns = step_app_module()
    whole = simulate(ns["make_server_app"](step_params(sizes, steps, sr_steps, result)), ns["client_app"], 2)
    print(f"per-step messages: simulation done ({whole:.1f} s)", flush=True)
    return step_rows(json.loads(result.read_text()), "simulation", whole)


def steps_deployed(sizes: list[int], steps: int, sr_steps: int, env: dict[str, str], work: Path) -> list[dict]:
    app = write_step_app(work / "step_app")
    result = work / "steps-deployment.json"
    whole = flwr_run(env, work, app, "steps", result, **step_params(sizes, steps, sr_steps, result))
    print(f"per-step messages: deployment done ({whole:.1f} s)", flush=True)
    return step_rows(json.loads(result.read_text()), "deployment", whole)


# ---------------------------------------------------------------- main
def find(rows: list[dict], key: tuple[str, str, int]) -> dict | None:
    """The per-step message row of (engine, mode, nbytes)."""
    return next((r for r in rows if (r["engine"], r["mode"], r["nbytes"]) == key), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat, 2 steps a message case (a smoke run)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each FedIT / split case (default 3)")
    parser.add_argument("--no-deployment", action="store_true", help="skip Flower's deployment engine")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    steps, sr_steps = (2, 1) if args.quick else (5, 2)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedcore-bench-flower-") as tmp:
        work = Path(tmp)
        fedit_rows, fedit = bench_fedit(repeats)
        runs = split_runs(repeats)
        h_a = split_rows(runs)[1]["h_A_bytes"]
        sizes = [h_a, BIG]
        step_rows_ = steps_simulated(sizes, steps, sr_steps, work)
        if not args.no_deployment:  # after the rest: idle SuperNodes poll, and the machine has 2 cores
            with deployment(work) as env:
                runs["control plane, flower deployment"] = []
                for i in range(repeats):
                    runs["control plane, flower deployment"].append(deployed_split(env, work, i))
                    whole = runs["control plane, flower deployment"][-1]["whole_s"]
                    print(f"split: deployment repeat {i + 1} done ({whole:.1f} s in flwr run)", flush=True)
                step_rows_ += steps_deployed(sizes, steps, sr_steps, env, work)
    split_rows_, split = split_rows(runs)
    rows = fedit_rows + split_rows_ + step_rows_
    goals, ratios = [], []

    def ratio(name: str, num: dict | None, den: dict | None, target: str | None = None) -> None:
        if num is None or den is None:
            return
        value = num["ms"] / den["ms"]
        if target is None:
            ratios.append({"case": "ratio", "impl": name, "ratio": round(value, 3)})
        else:
            goals.append(goal(name, value, target))

    fs, fp = fedit["flower simulation"], fedit["fedcore processes"]
    ratio("Flower-simulation FedIT round / fedcore round (processes)", fs, fp)
    ratio("Flower-simulation FedIT round / fedcore round (threads)", fs, fedit["fedcore threads"])
    goals.append(goal("Flower-simulation FedIT losses equal fedcore's (max abs diff)",
                      fs["loss_max_abs_diff_vs_threads"], "<= 1e-6"))  # fmt: skip
    native = split["fedcore processes"]
    for engine in ("simulation", "deployment"):
        cp = split.get(f"control plane, flower {engine}")
        if cp is None:
            continue
        ratio(f"control-plane split step ({engine}) / fedcore native step (processes)", cp, native, "<= 1.5")
        goals.append(goal(f"control-plane split losses ({engine}) equal fedcore's (max abs diff)",
                          cp["loss_max_abs_diff_vs_threads"], "<= 1e-6"))  # fmt: skip
        for nbytes in (split["h_A_bytes"], BIG):
            for mode in ("push_pull", "send_and_receive"):
                msg = find(step_rows_, (engine, mode, nbytes))
                name = (f"per-step Flower messages ({engine}, {mode}, {nbytes / 1024:.1f} KiB) / "
                        f"control-plane split step ({engine})")  # fmt: skip
                main_case = engine == "deployment" and mode == "push_pull" and nbytes == split["h_A_bytes"]
                ratio(name, msg, cp, ">= 10" if main_case else None)
    rows += ratios
    limits = {"h_A_bytes": split["h_A_bytes"], "big_message_bytes": BIG}
    if args.out or not args.quick:
        path = write_results("flower", rows, goals, out=args.out, limits=limits)
        print(f"wrote {path}")
    print(f"\nbench_flower: {time.perf_counter() - t_start:.0f} s; {repeats} repeat(s) per FedIT/split case, "
          f"{steps} (push/pull) / {sr_steps} (send_and_receive) timed steps per message case; h_A "
          f"{split['h_A_bytes']} B")  # fmt: skip
    print("run s: the whole run (fedcore processes: their start included; Flower: the run_simulation call or "
          "`flwr run`, every message case of an engine in one)")  # fmt: skip
    timed = [r for r in rows if "ratio" not in r]
    wc, wi = max(len(r["case"]) for r in timed), max(len(r["impl"]) for r in timed)
    print(f"{'case':<{wc}}  {'impl':<{wi}}  {'median ms (min-max)':>24}  {'run s':>6}  bytes")
    for r in timed:
        t = f"{r['ms']:.1f} ({r['ms_min']:.1f}-{r['ms_max']:.1f})"
        run = r.get("whole_run_wall_s", r.get("run_wall_s"))
        run_s = f"{run['median'] if isinstance(run, dict) else run:6.1f}" if run is not None else f"{'':6}"
        if "upload_bytes_per_round" in r:
            b = f"/round up {r['all_bytes_per_round']['up']} down {r['all_bytes_per_round']['down']}"
            b += f"; wall/round {r['wall_per_round_ms']['median']:.0f} ms"
        elif "wire_bytes_per_round" in r:
            w = r["wire_bytes_per_round"]
            b = f"/round up {sum(w['received'].values())} down {sum(w['sent'].values())}"
        else:
            b = f"/step down {r['flower_array_bytes_per_step']['down']} up {r['flower_array_bytes_per_step']['up']}"
        print(f"{r['case']:<{wc}}  {r['impl']:<{wi}}  {t:>24}  {run_s}  {b}")
    for r in rows:
        if "ratio" in r:
            print(f"ratio: {r['impl']}: x{r['ratio']}")
    for g in goals:
        print(f"goal: {g['name']}: measured {g['measured']} target {g['target']} met {g['met']}")


if __name__ == "__main__":
    main()
