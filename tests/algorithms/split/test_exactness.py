"""A sequential split run (roles, messages, averaging) equals centralized training of the same
model with the same data order and seeds, step for step (fp32, no noise, raw codecs)."""

from __future__ import annotations

import torch

from fedcore.algorithms.split.config import config_from_dict
from fedcore.algorithms.split.setup import build_client_data, build_split, client_parts, endless_batches, server_parts
from fedcore.data import CharTokenizer
from fedcore.runtime import run_threads


def test_sequential_run_equals_centralized_training_for_20_steps():
    config = config_from_dict(
        {
            "model": {"hidden_size": 32, "num_layers": 4},
            "lora": {"r": 4, "alpha": 8.0},
            "split": {"mode": "sequential"},
            "noise": {"std": 0.0},
            "codecs": {"h_A": "raw", "h_B": "raw", "dh_B": "raw", "dh_A": "raw"},
            "train": {"clients": 1, "rounds": 1, "local_steps": 20, "batch_size": 8},
            "data": {"train_per_client": 64, "eval_per_client": 8},
            "transport": {"kind": "inprocess"},
        }
    )
    split_losses = [s.loss for s in run_threads(config).result.steps]

    # centralized: the same modules built the same way, composed in one process, no messages
    tok = CharTokenizer()
    sm = build_split(config, tok)
    server = server_parts(config, sm)
    client = client_parts(config, sm, 0)
    batches = endless_batches(build_client_data(config, tok)[0], config, 0, tok.pad_id)
    central = []
    for _ in range(20):
        batch = next(batches)
        h_a = client.head(batch["input_ids"], batch["attention_mask"])
        loss = client.tail(server.body(h_a), labels=batch["labels"]).loss
        loss.backward()
        for opt, sched in ((client.optimizer, client.scheduler), (server.optimizer, server.scheduler)):
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        central.append(float(loss.detach()))
    assert len(split_losses) == 20
    torch.testing.assert_close(torch.tensor(split_losses), torch.tensor(central), rtol=1e-5, atol=1e-5)
    assert central[-1] < central[0]
