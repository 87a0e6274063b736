"""A client process started again after a drop moves its LR schedule and data order to where the
run is (the server's ``resume_step``), instead of starting both from zero."""

from __future__ import annotations

import pytest
import torch
from fedcore.transport import InProcessHub

from fedcore.algorithms.split.client_role import SplitClientRole
from fedcore.algorithms.split.config import config_from_dict
from fedcore.algorithms.split.setup import build_client_data, build_split, client_parts, endless_batches
from fedcore.data import CharTokenizer
from fedcore.lora import lora_state

CONFIG = {
    "model": {"hidden_size": 32, "num_layers": 3},
    "lora": {"r": 4, "alpha": 8.0},
    "train": {"clients": 2, "rounds": 4, "local_steps": 5, "batch_size": 4, "lr": 0.01},
    "data": {"train_per_client": 24, "eval_per_client": 4},
}


def _client(config, tok, hub):
    data = build_client_data(config, tok)[1]
    parts = client_parts(config, build_split(config, tok), 1)
    batches = endless_batches(data, config, 1, tok.pad_id)
    role = SplitClientRole(hub.endpoint("c1"), parts, batches, data.eval_batches, noise_std=0.0, noise_relative=False)
    return role, data


def test_a_rejoining_client_resumes_its_schedule_and_data_order():
    config = config_from_dict(CONFIG)
    tok = CharTokenizer()
    hub = InProcessHub()
    server = hub.server()
    role, data = _client(config, tok, hub)
    avg = {
        f"{part}.{k}": torch.randn_like(v)
        for part in ("head", "tail")
        for k, v in lora_state(getattr(role.parts, part)).items()
    }
    server.send_to("c1", avg, {"op": "load", "resume_step": 7}, tag="lora_down")
    server.send_to("c1", {}, {"op": "stop"}, tag="control")
    role.run()
    assert server.recv(5).meta["op"] == "loaded"

    reference = client_parts(config, build_split(config, tok), 1)  # a client that took 7 steps' schedule
    for _ in range(7):
        reference.optimizer.step()
        reference.scheduler.step()
    assert role.parts.scheduler.last_epoch == 7 and role.steps_taken == 7
    assert role.parts.optimizer.param_groups[0]["lr"] == pytest.approx(reference.optimizer.param_groups[0]["lr"])
    assert role.parts.optimizer.param_groups[0]["lr"] != pytest.approx(0.001)  # not the first warm-up lr
    fresh = endless_batches(data, config, 1, tok.pad_id)
    for _ in range(7):
        next(fresh)
    want, got = next(fresh), next(role.batches)  # the 8th batch of the client's data order
    assert all(torch.equal(want[k], got[k]) for k in want)
    for part in ("head", "tail"):  # and it holds the average it was sent
        for k, v in lora_state(getattr(role.parts, part)).items():
            assert torch.equal(v, avg[f"{part}.{k}"])


def test_a_resume_step_out_of_range_is_refused():
    config = config_from_dict(CONFIG)
    role, _ = _client(config, CharTokenizer(), InProcessHub())
    with pytest.raises(ValueError, match="resume_step"):
        role.resume(-1)
