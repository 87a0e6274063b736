"""A client step on a batch without loss tokens (every label masked) sends a zero dL/dh_B and
reports a NaN loss: nothing non-finite reaches the server, which keeps the client in the run."""

from __future__ import annotations

import math
import threading

import pytest
import torch
from fedcore.transport import InProcessHub

from fedcore.algorithms.split.client_role import SplitClientRole
from fedcore.algorithms.split.config import config_from_dict
from fedcore.algorithms.split.server_role import SplitServerRole
from fedcore.algorithms.split.setup import build_client_data, build_split, client_parts, endless_batches, server_parts
from fedcore.data import CharTokenizer
from fedcore.lora import lora_parameters

CONFIG = {
    "model": {"hidden_size": 32, "num_layers": 3},
    "lora": {"r": 4, "alpha": 8.0},
    "noise": {"std": 0.0},
    "codecs": {"h_A": "raw", "h_B": "raw", "dh_B": "raw", "dh_A": "raw"},
    "train": {"clients": 1, "rounds": 1, "local_steps": 2, "batch_size": 4},
    "data": {"train_per_client": 16, "eval_per_client": 4},
}


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_a_batch_without_loss_tokens_sends_zero_gradients(micro_batches):
    config = config_from_dict(CONFIG)
    tok = CharTokenizer()
    sm = build_split(config, tok)
    data = build_client_data(config, tok)[0]
    stream = endless_batches(data, config, 0, tok.pad_id)
    masked = next(stream)
    masked["labels"] = torch.full_like(masked["labels"], -100)

    def batches():
        yield masked  # no loss tokens at all
        yield from stream

    hub = InProcessHub()
    server = SplitServerRole(hub.server(), server_parts(config, sm), ["c0"], [1.0], timeout=20)
    client = SplitClientRole(
        hub.endpoint("c0"), client_parts(config, sm, 0), batches(), data.eval_batches,
        noise_std=0.0, noise_relative=False, micro_batches=micro_batches,
    )  # fmt: skip
    worker = threading.Thread(target=client.run, daemon=True)
    worker.start()
    server.link.send_to("c0", {}, {"op": "train", "steps": 2, "round": 0}, tag="control")
    done = server._serve_until("c0", "done")
    server.stop()
    worker.join(20)
    assert not worker.is_alive() and server.active == ["c0"] and not server.dropped
    (first, *_), (second, *_) = server.reports_of(done, 2)
    assert math.isnan(first) and math.isfinite(second)
    for module in (server.parts.body, client.parts.head, client.parts.tail):
        assert all(torch.isfinite(p).all() for p in lora_parameters(module).values())
