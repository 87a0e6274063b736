"""FedIT (LoRA FedAvg) over in-process links: the global adapter is the sample-weighted mean of the
last round's uploads, only sampled clients train, the held-out loss falls, bad or failing clients
are dropped while the others finish, runs are bit-identical, and config errors name the key."""

from __future__ import annotations

import math
import random
import time
from typing import Any

import pytest
import torch

from fedcore.algorithms.fedit import FedITClient, FedITConfig, FedITResult, FedITServer
from fedcore.algorithms.fedit.roles import sample_clients
from fedcore.algorithms.fedit.spec import SPEC, report
from fedcore.algorithms.registry import get_algorithm
from fedcore.algorithms.threads import serve_in_threads
from fedcore.config import DataConfig, ModelConfig, TrainConfig, build_config

CLIENTS = 3


def tiny(rounds: int = 2, lr: float = 3e-3, **kw: Any) -> FedITConfig:
    return FedITConfig(
        model=ModelConfig(hidden_size=32, num_layers=4, num_heads=4, num_kv_heads=2),
        data=DataConfig(train_per_client=16, eval_per_client=8, max_len=32),
        train=TrainConfig(clients=CLIENTS, rounds=rounds, local_steps=2, batch_size=8, lr=lr),
        round_timeout_s=60.0,
        **kw,
    )


class RecordingLink:
    """A client's link that keeps a copy of every upload it sends: (round, meta, tensors)."""

    def __init__(self, link: Any, sent: list[tuple[int, dict, dict]]):
        self.link, self.sent = link, sent

    def send_to(self, peer, tensors, meta=None, **kw):
        if (meta or {}).get("op") == "upload":
            self.sent.append((meta["round"], dict(meta), {n: t.clone() for n, t in tensors.items()}))
        return self.link.send_to(peer, tensors, meta, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.link, name)


def run(config: FedITConfig, client_class: type = FedITClient, uploads: dict | None = None):
    """(result, server link stats, client errors); ``uploads[i]`` receives client i's uploads."""
    logs: dict[int, list] = uploads if uploads is not None else {}

    def client(i: int):
        logs[i] = []
        return lambda link: client_class(config, RecordingLink(link, logs[i]), i)

    return serve_in_threads(lambda link, peers: FedITServer(config, link, peers), [client(i) for i in range(CLIENTS)])


def weighted_mean(states: list[dict], weights: list[float]) -> dict[str, torch.Tensor]:
    total = sum(weights)
    return {n: sum(s[n].double() * (w / total) for s, w in zip(states, weights, strict=True)) for n in states[0]}


def test_the_global_adapter_is_the_sample_weighted_mean_of_the_last_uploads():
    config = tiny(rounds=2)
    uploads: dict[int, list] = {}
    result, wire, errors = run(config, uploads=uploads)
    assert not errors and not result.dropped
    assert result.included == [[0, 1, 2], [0, 1, 2]]
    last = [next(u for u in uploads[i] if u[0] == 1) for i in range(CLIENTS)]
    samples = [u[1]["samples"] for u in last]
    assert samples == result.examples
    want = weighted_mean([u[2] for u in last], [float(s) for s in samples])
    assert set(result.final_state) == set(want) and len(want) == 2 * 2 * 4  # q, v x A, B x 4 layers
    for name, value in want.items():
        torch.testing.assert_close(result.final_state[name].double(), value, rtol=0, atol=1e-6)
    # the round's loss is the same weighted mean of what the clients reported
    losses = [u[1]["loss"] for u in last]
    mean_loss = sum(s * x for s, x in zip(samples, losses, strict=True)) / sum(samples)
    assert result.round_loss[1] == pytest.approx(mean_loss)
    # bytes: each round the global state goes down to and comes up from every participant
    size = sum(t.numel() * t.element_size() for t in want.values()) // 2  # want is fp64; the wire fp32
    assert result.download_bytes == [CLIENTS * size] * 2 and result.upload_bytes == [CLIENTS * size] * 2
    assert wire["received"]["lora_up"] == 2 * CLIENTS * size


def test_only_the_sampled_clients_train():
    config = tiny(rounds=3, participation=0.5)
    uploads: dict[int, list] = {}
    result, _, errors = run(config, uploads=uploads)
    assert not errors and not result.dropped
    rng = random.Random(config.train.seed + 17)
    expected = [sample_clients(list(range(CLIENTS)), 0.5, rng) for _ in range(3)]
    assert result.participants == expected == result.included
    assert all(len(p) == 2 for p in expected)  # ceil(0.5 * 3)
    trained = [sorted(i for i in range(CLIENTS) for u in uploads[i] if u[0] == t) for t in range(3)]
    assert trained == expected
    last = [next(u for u in uploads[i] if u[0] == 2) for i in expected[2]]
    want = weighted_mean([u[2] for u in last], [float(u[1]["samples"]) for u in last])
    for name, value in want.items():
        torch.testing.assert_close(result.final_state[name].double(), value, rtol=0, atol=1e-6)
    assert all(math.isfinite(x) for x in result.eval_end)  # every client is evaluated


def test_the_held_out_loss_falls():
    result, _, errors = run(tiny(rounds=4, lr=5e-3))
    assert not errors
    for start, end in zip(result.eval_start, result.eval_end, strict=True):
        assert end < start - 0.05, (result.eval_start, result.eval_end)
    assert result.round_loss[-1] < result.round_loss[0]


class WrongShape(FedITClient):
    def train_round(self, t, state):
        upload, loss = super().train_round(t, state)
        if self.index == 1 and t == 1:
            name = sorted(upload)[0]
            upload[name] = torch.zeros(upload[name].shape[0] + 1, upload[name].shape[1])
        return upload, loss


class NaNUpload(FedITClient):
    def train_round(self, t, state):
        upload, loss = super().train_round(t, state)
        if self.index == 1 and t == 1:
            upload[sorted(upload)[-1]][0, 0] = float("nan")
        return upload, loss


@pytest.mark.parametrize("client_class", [WrongShape, NaNUpload])
def test_a_bad_upload_drops_its_client_and_the_others_finish(client_class):
    result, _, errors = run(tiny(rounds=3), client_class)
    assert not errors
    assert list(result.dropped) == [1] and "bad upload in round 1" in result.dropped[1]
    assert result.included == [[0, 1, 2], [0, 2], [0, 2]]
    assert math.isnan(result.eval_end[1]) and math.isfinite(result.eval_start[1])
    assert all(math.isfinite(result.eval_end[i]) for i in (0, 2))
    assert all(bool(torch.isfinite(t).all()) for t in result.final_state.values())


class Crashing(FedITClient):
    def train_round(self, t, state):
        if self.index == 2 and t == 1:
            raise RuntimeError("client 2 crashed")
        return super().train_round(t, state)


def test_a_client_thread_that_raises_is_dropped():
    result, _, errors = run(tiny(rounds=3), Crashing)
    assert [str(e) for e in errors] == ["client 2 crashed"]
    assert list(result.dropped) == [2] and "client 2 crashed" in result.dropped[2]
    assert result.included == [[0, 1, 2], [0, 1], [0, 1]]
    assert math.isnan(result.eval_end[2]) and all(math.isfinite(result.eval_end[i]) for i in (0, 1))


class Late(FedITClient):
    def train_round(self, t, state):
        if self.index == 0 and t == 0:
            time.sleep(2.5)
        return super().train_round(t, state)


def test_a_client_past_the_round_deadline_is_dropped():
    config = tiny(rounds=2)
    config.round_timeout_s = 1.0
    result, _, errors = run(config, Late)
    assert not errors and list(result.dropped) == [0] and "within 1.0 s" in result.dropped[0]
    assert result.included == [[1, 2], [1, 2]] and math.isnan(result.eval_end[0])


def test_two_runs_are_bit_identical_and_reported():
    config = tiny(rounds=2, participation=0.6)
    a, wire, _ = run(config)
    b, _, _ = run(config)
    assert a.eval_end == b.eval_end and a.eval_start == b.eval_start and a.round_loss == b.round_loss
    assert all(torch.equal(a.final_state[n], b.final_state[n]) for n in a.final_state)
    assert get_algorithm("fedit") is SPEC and SPEC.total(config) == 2 and "fedit" in SPEC.describe(config)
    rep = report(config, a, wire)
    assert isinstance(a, FedITResult) and rep.losses == a.eval_end
    assert [len(t.rows) for t in rep.tables] == [CLIENTS, 1]
    assert rep.tables[0].columns == ["client", "examples", "loss start", "loss end", "change"]
    assert [k for k, _ in rep.records] == ["round"] * 2 + ["eval"] * CLIENTS
    assert rep.curve == [(1.0, a.round_loss[0]), (2.0, a.round_loss[1])]
    assert SPEC.config_from_dict(SPEC.config_to_dict(config)) == config


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="participation"):
        FedITConfig(participation=0.0)
    with pytest.raises(ValueError, match="participation"):
        FedITConfig(participation=1.5)
    with pytest.raises(ValueError, match="round_timeout_s"):
        FedITConfig(round_timeout_s=0.0)
    with pytest.raises(ValueError, match=r"clientz.*valid keys.*'clients'"):
        build_config(FedITConfig, {"train": {"clientz": 3}})
    with pytest.raises(ValueError, match="algorithm"):
        build_config(FedITConfig, {"algorithm": "split"})
    assert build_config(FedITConfig, {"participation": 1}).participation == 1.0
    assert FedITConfig().num_clients == 4
