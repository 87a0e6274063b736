"""Where a split run keeps its parts: ``train.device`` (a CUDA run matches the CPU run) and a
full-size vocabulary through ``model.vocab_size``."""

from __future__ import annotations

import pytest
import torch

from fedcore.algorithms.split.config import config_from_dict
from fedcore.algorithms.split.setup import build_split
from fedcore.data import CharTokenizer
from fedcore.runtime import run_threads

SMALL = {
    "model": {"hidden_size": 32, "num_layers": 3},
    "lora": {"r": 4, "alpha": 8.0},
    "noise": {"std": 0.0},
    "codecs": {"h_A": "raw", "h_B": "raw", "dh_B": "raw", "dh_A": "raw"},
    "train": {"clients": 2, "rounds": 1, "local_steps": 3, "batch_size": 8},
    "data": {"train_per_client": 32, "eval_per_client": 8},
    "transport": {"kind": "inprocess"},
}


def test_vocab_size_widens_the_embedding_and_the_head():
    tok = CharTokenizer()
    sm = build_split(config_from_dict({**SMALL, "model": {**SMALL["model"], "vocab_size": 1000}}), tok)
    assert sm.head.embed.weight.shape == (1000, 32)
    assert run_threads(config_from_dict({**SMALL, "model": {**SMALL["model"], "vocab_size": 1000}})).result.steps
    with pytest.raises(ValueError, match="below the tokenizer's"):
        build_split(config_from_dict({**SMALL, "model": {**SMALL["model"], "vocab_size": 10}}), tok)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    ("mode", "micro_batches"), [("sequential", 1), ("client-batch", 2), ("server-hierarchical", 1)]
)
def test_a_cuda_run_matches_the_cpu_run(mode, micro_batches):
    split = {"mode": mode, "micro_batches": micro_batches}
    on_cpu = run_threads(config_from_dict({**SMALL, "split": split})).result
    on_gpu = run_threads(
        config_from_dict({**SMALL, "split": split, "train": {**SMALL["train"], "device": "cuda"}})
    ).result
    torch.testing.assert_close(
        torch.tensor([s.loss for s in on_gpu.steps]), torch.tensor([s.loss for s in on_cpu.steps]), rtol=1e-4, atol=1e-4
    )
    torch.testing.assert_close(torch.tensor(on_gpu.eval_end), torch.tensor(on_cpu.eval_end), rtol=1e-4, atol=1e-4)
