"""Overlap of communication with computation through pinned staging slots (GPU).

A step = compute (a chain of GEMMs on the default stream) + send of the step's hidden state
(device -> pinned slot -> loopback transport -> pinned buffer -> device). Measured per step:
T_compute alone, T_comm alone, and T_step with both issued together; overlap efficiency =
(T_compute + T_comm - T_step) / min(T_compute, T_comm), for one slot and for two.

    python bench/bench_overlap.py [--out PATH]   # on a CUDA machine; on CPU it records "pending"
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import goal, write_results  # noqa: E402
from fedcore.transport import Client, Server  # noqa: E402
from fedcore.transport.overlap import OverlappedReceiver, OverlappedSender  # noqa: E402

HIDDEN = (8, 2048, 4096)  # h (B, T, H) bf16: 128 MiB per step
STEPS = 20


def _median_s(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / STEPS


def run(slots: int) -> dict:
    server = Server("tcp://127.0.0.1:0", plaintext=True)
    client = Client(server.address, plaintext=True)
    sender, receiver = OverlappedSender(client, slots=slots), OverlappedReceiver(server, "cuda")
    h = torch.randn(HIDDEN, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)

    def compute() -> None:
        x = h.view(-1, 4096)
        for _ in range(4):
            x = x @ w

    def comm_only() -> None:
        futures = [sender.send({"h": h}) for _ in range(STEPS)]
        for f in futures:
            f.result()
            receiver.recv(timeout=60)

    def compute_only() -> None:
        for _ in range(STEPS):
            compute()

    def both() -> None:
        futures = []
        for _ in range(STEPS):
            compute()
            futures.append(sender.send({"h": h}))
        for f in futures:
            f.result()
            receiver.recv(timeout=60)

    for fn in (compute_only, comm_only, both):
        fn()  # warm-up
    t_compute, t_comm, t_step = _median_s(compute_only), _median_s(comm_only), _median_s(both)
    sender.close()
    receiver.close()
    client.close()
    server.close()
    efficiency = (t_compute + t_comm - t_step) / min(t_compute, t_comm)
    return {
        "slots": slots,
        "compute_ms": t_compute * 1e3,
        "comm_ms": t_comm * 1e3,
        "step_ms": t_step * 1e3,
        "efficiency": efficiency,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        goals = [
            {
                "name": "overlap efficiency with two slots",
                "measured": None,
                "target": ">= 0.90",
                "met": None,
                "pending": "no GPU in this run",
            }
        ]
        print(f"wrote {write_results('overlap', [], goals, out=args.out)}\nno GPU: overlap figures pending")
        return
    rows = [run(1), run(2)]
    for r in rows:
        r.update(case=f"h {HIDDEN} bf16", impl=f"{r['slots']} slot(s)", ms=round(r["step_ms"], 3))
    goals = [goal("overlap efficiency with two slots", rows[1]["efficiency"], ">= 0.9")]
    print(f"wrote {write_results('overlap', rows, goals, out=args.out)}")
    for r in rows:
        print(
            f"{r['impl']:<10} compute {r['compute_ms']:.2f} ms  comm {r['comm_ms']:.2f} ms  "
            f"step {r['step_ms']:.2f} ms  efficiency {r['efficiency']:.2f}"
        )
    for g in goals:
        print(f"goal: {g['name']}: measured {g['measured']} target {g['target']} met {g['met']}")


if __name__ == "__main__":
    main()
