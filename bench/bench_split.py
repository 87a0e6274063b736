"""Split training step vs the same step on the unsplit model: the cost of cutting the model.

Both run one LoRA fine-tuning step (forward, backward, optimizer step) on the same tiny Llama and
batch; the split step also serialises h_A / h_B through SplitState and hands the hidden-state
gradients back, as across a process boundary (no socket: the transport suite measures that).

    python bench/bench_split.py [--out PATH]      # JSON under bench/results/, table last
    pytest bench/bench_split.py --benchmark-only  # pytest-benchmark latency suite
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import goal, median_ms, print_table, write_results  # noqa: E402

from fedcore.accounting import ByteMeter  # noqa: E402
from fedcore.algorithms.split import ClientParts, ServerParts, split_train_step  # noqa: E402
from fedcore.lora import inject_lora, lora_parameters  # noqa: E402
from fedcore.model import split_model  # noqa: E402
from fedcore.model.tiny import tiny_causal_lm  # noqa: E402

CASES = {  # name -> (hidden, layers, batch, tokens); the small one keeps the pytest suite quick
    "llama h256 L6 B8 T128": (256, 6, 8, 128),
    "llama h128 L4 B4 T64": (128, 4, 4, 64),
}


def _setup(hidden: int, layers: int, batch: int, steps: int):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = tiny_causal_lm("llama", hidden_size=hidden, num_layers=layers, num_heads=4, num_kv_heads=2)
    for p in model.parameters():
        p.requires_grad_(False)
    inject_lora(model.model.layers, targets=["q", "k", "v", "o"], r=16, alpha=32)
    model.to(device)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (batch, steps), generator=gen).to(device)
    data = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    return model, data


def unsplit_step(model, data, opt):
    def run():
        model(**data).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return run


def split_step(model, data, noise_std: float):
    sm = split_model(model, 1, 1)

    def parts(modules):
        opt = torch.optim.AdamW([p for m in modules for p in lora_parameters(m).values()], lr=1e-4)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)

    client = ClientParts(sm.head, sm.tail, *parts([sm.head, sm.tail]), torch.Generator(device=data["input_ids"].device))
    server = ServerParts(sm.body, *parts([sm.body]))
    meter = ByteMeter()
    return lambda: split_train_step(client, server, data, noise_std=noise_std, noise_relative=True, meter=meter)


def _impls(case: str):
    model, data = _setup(*CASES[case])
    ref = copy.deepcopy(model)
    opt = torch.optim.AdamW(lora_parameters(ref).values(), lr=1e-4)
    return {
        "unsplit": unsplit_step(ref, data, opt),
        "split": split_step(model, data, 0.0),
        "split+noise": split_step(copy.deepcopy(model), data, 0.02),
    }


def test_split_step(benchmark):
    benchmark(_impls("llama h128 L4 B4 T64")["split"])


def test_unsplit_step(benchmark):
    benchmark(_impls("llama h128 L4 B4 T64")["unsplit"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    rows, goals = [], []
    for case in CASES:
        impls = _impls(case)
        times = {}
        # interleave impls round by round so drift on a shared machine hits all alike
        for _ in range(3):
            for name, fn in impls.items():
                times.setdefault(name, []).append(median_ms(fn, repeats=max(3, args.repeats // 3)))
        for name, ts in times.items():
            rows.append({"case": case, "impl": name, "ms": round(sorted(ts)[1], 4)})
        ratio = sorted(times["split"])[1] / sorted(times["unsplit"])[1]
        goals.append(goal(f"{case}: split step / unsplit step", ratio, "<= 1.15"))
    path = write_results("split", rows, goals, out=args.out)
    print(f"wrote {path}")
    print_table(rows, goals)


if __name__ == "__main__":
    main()
