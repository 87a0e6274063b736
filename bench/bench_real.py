"""Every method on a real base: SmolLM2-135M-Instruct with the chatterbot corpus (examples/real/).

Each method's example config runs as ``fedcore run`` (a server here, one process per client over
CURVE on loopback), exactly as a user runs it. Per client: held-out loss and ROUGE-L / exact match
of greedy answers under the base and under the saved model (what the run's ``text_eval`` records
measured after loading the exported adapter or folder back). Per method: bytes at the server's
link each way, wall time, and each process's peak resident memory (VmHWM, sampled from /proc every
0.2 s) against the whole model's fp32 size and an idle process that imported the same libraries.

    python bench/bench_real.py                       # all six, ~10 minutes each on 2 cores
    python bench/bench_real.py --methods split fedit --quick    # fewer rounds: a smoke run

Writes bench/results/real-<device>.json (../shared/BENCH.md's shape); ``--quick`` runs are not
written unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import goal, write_results  # noqa: E402

from fedcore.config.toml import dump_toml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "real"
METHODS = ("split", "fedit", "fibecfed", "fedbcd", "parablock", "fedcybgd")
QUICK = {"rounds": 1, "local_steps": 2}  # --quick: per method, where the config has them


def status_kib(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class MemoryWatch(threading.Thread):
    """Peak VmHWM (KiB) of a process and of each of its child processes, sampled until stopped."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peaks, self.stop = pid, {}, threading.Event()
        self.order: list[int] = []

    def run(self) -> None:
        while not self.stop.is_set():
            for p in [self.pid, *children(self.pid)]:
                hwm = status_kib(p, "VmHWM")
                if hwm is not None:
                    if p not in self.peaks:
                        self.order.append(p)
                    self.peaks[p] = max(self.peaks.get(p, 0), hwm)
            time.sleep(0.2)


def idle_rss_mib() -> float:
    """VmHWM of an interpreter that imported torch, transformers and fedcore's runtime, no model."""
    code = (
        "import torch, transformers, fedcore.runtime, fedcore.algorithms, pathlib;"
        "print([l for l in pathlib.Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM')][0])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return int(out.split()[1]) / 1024


def model_fp32_mib() -> float:
    from fedcore.algorithms.builders import model_source
    from fedcore.config import ModelConfig

    folder = Path(model_source(ModelConfig(pretrained="smollm2-135m-instruct")))
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 2**20


def client_part_mib(blocks_a: int, blocks_c: int) -> float:
    """Parameter bytes a split client holds (head + tail, tied weights once), in MiB."""
    from fedcore.algorithms.builders import base_model, tokenizer_of
    from fedcore.config import ModelConfig
    from fedcore.model import split_model

    mc = ModelConfig(pretrained="smollm2-135m-instruct")
    sm = split_model(base_model(mc, tokenizer_of(mc).vocab_size), blocks_a, blocks_c)
    unique = {p.data_ptr(): p for part in (sm.head, sm.tail) for p in part.parameters()}
    return sum(p.numel() * p.element_size() for p in unique.values()) / 2**20


def run_method(method: str, quick: bool, workdir: Path) -> dict[str, Any]:
    tables = tomllib.loads((EXAMPLES / f"{method}.toml").read_text())
    if quick:
        for key, value in QUICK.items():
            if key in tables:
                tables[key] = value
            if key in tables.get("train", {}):
                tables["train"][key] = value
    out = workdir / method
    tables["output"] = {**tables.get("output", {}), "dir": str(out), "checkpoint": False, "plot": False}
    config = workdir / f"{method}.toml"
    config.write_text(dump_toml(tables))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "fedcore.cli", "run", str(config)], cwd=workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    watch = MemoryWatch(proc.pid)
    watch.start()
    log, _ = proc.communicate()
    wall = time.perf_counter() - t0
    watch.stop.set()
    watch.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{log[-4000:]}")
    (run_dir,) = out.iterdir()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = next(r for r in records if r["type"] == "summary")
    peaks = [watch.peaks[p] / 1024 for p in watch.order]
    return {
        "text_eval": [r for r in records if r["type"] == "text_eval"],
        "bytes_up": summary["link_bytes"]["up"],
        "bytes_down": summary["link_bytes"]["down"],
        "wall_s": wall,
        "server_peak_mib": peaks[0] if peaks else None,
        "client_peak_mib": peaks[1:],
        "log_tail": log[-1500:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--quick", action="store_true", help="1 round of 2 local steps per method (a smoke run)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    whole = model_fp32_mib()
    idle = idle_rss_mib()
    rows, goals = [], []
    with tempfile.TemporaryDirectory(prefix="fedcore-bench-real-") as tmp:
        for method in args.methods:
            res = run_method(method, args.quick, Path(tmp))
            for r in res["text_eval"]:
                rows.append({
                    "case": method, "impl": f"client {r['client']}",
                    "loss_before": r["loss_before"], "loss_after": r["loss_after"],
                    "rouge_l_before": r["rouge_l_before"], "rouge_l_after": r["rouge_l_after"],
                    "exact_before": r["exact_before"], "exact_after": r["exact_after"], "prompts": r["prompts"],
                })  # fmt: skip
            rows.append({
                "case": method, "impl": "run", "bytes_up": res["bytes_up"], "bytes_down": res["bytes_down"],
                "wall_s": round(res["wall_s"], 1), "server_peak_rss_mib": res["server_peak_mib"],
                "client_peak_rss_mib": res["client_peak_mib"],
            })  # fmt: skip
            worst = max(r["loss_after"] - r["loss_before"] for r in res["text_eval"])
            goals.append(goal(f"{method}: held-out loss change on the worst client (nats/token)", worst, "<= 0.0"))
            if method == "split":
                split = tomllib.loads((EXAMPLES / "split.toml").read_text())["split"]
                held = client_part_mib(split["blocks_a"], split["blocks_c"])
                rows.append({"case": method, "impl": "client parts", "param_mib": round(held, 1),
                             "share_of_model": round(held / whole, 3),
                             "peak_rss_above_idle_mib": [round(x - idle) for x in res["client_peak_mib"]]})  # fmt: skip
                goals.append(goal("split: a client's parameters (head + tail), share of the fp32 model", held / whole,
                                  "<= 0.5"))  # fmt: skip
            print(f"{method}: done in {res['wall_s']:.0f} s", flush=True)
    limits = {"model_fp32_mib": round(whole, 1), "idle_process_rss_mib": round(idle, 1)}
    if args.out or not args.quick:
        path = write_results("real", rows, goals, out=args.out, limits=limits)
        print(f"wrote {path}")
    print(f"model fp32 {whole:.0f} MiB, idle process {idle:.0f} MiB")
    print(f"{'method':<10} {'client':<9} {'loss before -> after':>22} {'ROUGE-L before -> after':>24}")
    for r in rows:
        if "param_mib" in r:
            print(f"{r['case']:<10} client parts: {r['param_mib']} MiB of parameters ({r['share_of_model']:.0%} of "
                  f"the model); peak RSS above an idle process {r['peak_rss_above_idle_mib']} MiB")  # fmt: skip
        elif "loss_before" in r:
            loss = f"{r['loss_before']:.3f} -> {r['loss_after']:.3f}"
            rouge = f"{r['rouge_l_before']:.3f} -> {r['rouge_l_after']:.3f}"
            print(f"{r['case']:<10} {r['impl']:<9} {loss:>22} {rouge:>24}")
        else:
            print(f"{r['case']:<10} run: up {r['bytes_up'] / 2**20:.1f} MiB, down {r['bytes_down'] / 2**20:.1f} MiB, "
                  f"{r['wall_s']} s, peak RSS server {r['server_peak_rss_mib']:.0f} MiB, clients "
                  f"{[round(x) for x in r['client_peak_rss_mib']]} MiB")  # fmt: skip
    for g in goals:
        print(f"goal: {g['name']}: measured {g['measured']} target {g['target']} met {g['met']}")


if __name__ == "__main__":
    main()
