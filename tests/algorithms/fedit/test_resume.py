"""FedIT resume: the server emits a Checkpoint after every round; a fresh server restored from the
one after round 2 (in memory, or saved and loaded from disk) with fresh clients finishes the run
bit-for-bit as the uninterrupted run does, without repeating round -1's evaluation; clients move
their batch streams to the position the server names; a checkpoint that does not fit is refused."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from fedcore.algorithms.fedit import FedITClient, FedITConfig, FedITResult, FedITServer
from fedcore.algorithms.fedit.roles import GLOBAL
from fedcore.algorithms.registry import BuiltProgressEvent, Checkpoint
from fedcore.algorithms.threads import serve_in_threads
from fedcore.config import DataConfig, ModelConfig, TrainConfig
from fedcore.runtime.checkpoint import load_checkpoint, save_checkpoint

CLIENTS = 3
ROUNDS = 4


def tiny(rounds: int = ROUNDS, participation: float = 0.6) -> FedITConfig:
    return FedITConfig(
        model=ModelConfig(hidden_size=32, num_layers=4, num_heads=4, num_kv_heads=2),
        data=DataConfig(train_per_client=16, eval_per_client=8, max_len=32),
        train=TrainConfig(clients=CLIENTS, rounds=rounds, local_steps=3, batch_size=8, lr=3e-3),
        participation=participation,  # 2 of 3 a round: the sampler's RNG and uneven stream positions matter
        round_timeout_s=60.0,
    )


class SentLog:
    """The server's link, keeping (op, round) of every message it sends."""

    def __init__(self, link: Any, sent: list[tuple[str, Any]]):
        self.link, self.sent = link, sent

    def send_to(self, peer, tensors, meta=None, **kw):
        self.sent.append(((meta or {}).get("op"), (meta or {}).get("round")))
        return self.link.send_to(peer, tensors, meta, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.link, name)


def run(
    config: FedITConfig,
    *,
    restore: Checkpoint | None = None,
    events: list[BuiltProgressEvent] | None = None,
    sent: list | None = None,
    client_class: type = FedITClient,
    clients: list | None = None,
) -> FedITResult:
    """One run over threads: fresh server (restored from ``restore``) and fresh clients."""

    def server(link: Any, peers: list[str]) -> FedITServer:
        progress = (lambda e: events.append(e.built())) if events is not None else None
        s = FedITServer(config, SentLog(link, sent if sent is not None else []), peers, progress)
        if restore is not None:
            s.restore(restore)
        return s

    def client(i: int):
        def make(link: Any) -> FedITClient:
            c = client_class(config, link, i)
            if clients is not None:
                clients.append(c)
            return c

        return make

    result, _, errors = serve_in_threads(server, [client(i) for i in range(CLIENTS)])
    assert not errors or client_class is not FedITClient
    return result


def assert_same_run(a: FedITResult, b: FedITResult) -> None:
    # repr: exact, and NaN (a dropped client) equals NaN
    assert [repr(x) for x in a.eval_start] == [repr(x) for x in b.eval_start]
    assert [repr(x) for x in a.eval_end] == [repr(x) for x in b.eval_end]
    assert [repr(x) for x in a.round_loss] == [repr(x) for x in b.round_loss]
    assert a.participants == b.participants and a.included == b.included
    assert a.upload_bytes == b.upload_bytes and a.download_bytes == b.download_bytes
    assert a.dropped == b.dropped and a.examples == b.examples
    assert list(a.final_state) == list(b.final_state)
    assert all(torch.equal(a.final_state[n], b.final_state[n]) for n in a.final_state)


@pytest.fixture(scope="module")
def reference() -> tuple[FedITResult, list[BuiltProgressEvent]]:
    """The uninterrupted run (no progress callback), and a second one's progress events."""
    config = tiny()
    plain = run(config)
    events: list[BuiltProgressEvent] = []
    second = run(config, events=events)
    assert_same_run(plain, second)  # emitting checkpoints changes nothing
    return plain, events


def test_every_round_emits_a_checkpoint(reference):
    plain, events = reference
    assert [e.record for e in events] == list(range(ROUNDS))
    assert [e.checkpoint.round for e in events] == [1, 2, 3, 4]
    last = events[-1].checkpoint
    assert set(last.tensors) == {GLOBAL + n for n in plain.final_state}
    assert all(torch.equal(last.tensors[GLOBAL + n], t) for n, t in plain.final_state.items())
    assert all(t.device.type == "cpu" for t in last.tensors.values())
    st = events[1].checkpoint.state
    assert st["result"]["round_loss"] == plain.round_loss[:2]
    assert st["result"]["eval_start"] == plain.eval_start
    # local steps asked of each client: 3 a round in which it was sampled
    assert st["steps"] == [3 * sum(i in p for p in plain.participants[:2]) for i in range(CLIENTS)]
    assert len(set(st["steps"])) > 1  # uneven: the fast-forward is exercised


def test_a_resumed_run_ends_as_the_uninterrupted_one(reference):
    plain, events = reference
    config = tiny()
    sent: list = []
    resumed_events: list[BuiltProgressEvent] = []
    resumed = run(config, restore=events[1].checkpoint, events=resumed_events, sent=sent)
    assert_same_run(plain, resumed)
    assert ("eval", -1) not in sent and ("eval", ROUNDS) in sent  # round -1's evaluation is not redone
    assert sorted({r for op, r in sent if op == "round"}) == [2, 3]
    assert [e.checkpoint.round for e in resumed_events] == [3, 4]
    got, want = resumed_events[-1].checkpoint, events[-1].checkpoint
    assert all(torch.equal(got.tensors[n], t) for n, t in want.tensors.items())
    assert {**got.state, "wall_seconds": 0} == {**want.state, "wall_seconds": 0}


def test_a_checkpoint_saved_and_loaded_from_disk_resumes_as_well(reference, tmp_path):
    plain, events = reference
    save_checkpoint(tmp_path, events[1].checkpoint)
    clients: list[FedITClient] = []
    resumed = run(tiny(), restore=load_checkpoint(tmp_path), clients=clients)
    assert_same_run(plain, resumed)
    # every fresh client's stream ends where the uninterrupted run's does
    steps = events[-1].checkpoint.state["steps"]
    assert [c.local.drawn for c in sorted(clients, key=lambda c: c.index)] == steps


def test_the_last_checkpoint_only_evaluates(reference):
    plain, events = reference
    sent: list = []
    resumed = run(tiny(), restore=events[-1].checkpoint, sent=sent)
    assert_same_run(plain, resumed)
    assert {op for op, _ in sent} == {"eval", "stop"}


class Crashing(FedITClient):
    def train_round(self, t, state):
        if self.index == 2 and t == 0:
            raise RuntimeError("client 2 crashed")
        return super().train_round(t, state)


def test_the_roster_is_restored_and_a_dropped_clients_fresh_process_is_let_go():
    config = tiny(rounds=3, participation=1.0)
    events: list[BuiltProgressEvent] = []
    plain = run(config, events=events, client_class=Crashing)
    assert list(plain.dropped) == [2] and plain.included[1:] == [[0, 1], [0, 1]]
    ckpt = events[0].checkpoint
    assert ckpt.state["roster"]["active"] == [0, 1] and ckpt.state["roster"]["dropped"][0][0] == 2
    sent: list = []
    resumed = run(config, restore=ckpt, sent=sent)  # every client fresh and healthy: 2 stays out
    assert_same_run(plain, resumed)
    assert sent[0] == ("stop", None)


def test_a_client_moves_its_stream_to_the_position_the_server_names():
    config = tiny()
    a, b = FedITClient(config, None, 1), FedITClient(config, None, 1)
    first = [next(b.local.batches) for _ in range(7)]  # over an epoch boundary (18 examples, batches of 8)
    a.seek(5)
    assert a.local.drawn == 5 and torch.equal(a.local.next_batch()["input_ids"], first[5]["input_ids"])
    a.seek(2)  # behind: from the start again
    assert a.local.drawn == 2 and torch.equal(a.local.next_batch()["input_ids"], first[2]["input_ids"])
    a.seek(3)  # where it is: nothing to do
    assert torch.equal(a.local.next_batch()["input_ids"], first[3]["input_ids"])
    with pytest.raises(ValueError, match="steps"):
        a.seek(-1)


def test_a_checkpoint_that_does_not_fit_is_refused(reference):
    _, events = reference
    ckpt = events[1].checkpoint
    server = FedITServer(tiny(), None, [f"client-{i}" for i in range(CLIENTS)])
    with pytest.raises(ValueError, match="train.rounds = 1"):
        FedITServer(tiny(rounds=1), None, [f"client-{i}" for i in range(CLIENTS)]).restore(ckpt)
    with pytest.raises(ValueError, match="algorithm"):
        server.restore(dataclasses.replace(ckpt, state={**ckpt.state, "algorithm": "split"}))
    with pytest.raises(ValueError, match="clients"):
        server.restore(dataclasses.replace(ckpt, state={**ckpt.state, "clients": 4}))
    with pytest.raises(ValueError, match="not a FedIT checkpoint"):
        server.restore(dataclasses.replace(ckpt, state={"algorithm": "fedit", "clients": CLIENTS}))
    bad = dict(ckpt.tensors)
    bad.pop(sorted(bad)[0])
    with pytest.raises(ValueError, match="adapter"):
        server.restore(dataclasses.replace(ckpt, tensors=bad))
    assert server.resumed is None and server.steps == [0] * CLIENTS  # nothing was changed
