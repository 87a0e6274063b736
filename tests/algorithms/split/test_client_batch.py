"""The client-batch server's message handling: clients running ahead are served in order, and a
client that breaks the protocol is dropped while the others finish the step."""

from __future__ import annotations

import threading

import torch

from fedcore.algorithms.split.client_batch import ClientBatchServerRole
from fedcore.algorithms.split.wire import state_meta, state_tensors
from fedcore.model import SplitState


def _h_a(gen, batch: int, steps: int) -> dict[str, torch.Tensor]:
    state = SplitState(
        torch.randn(batch, steps, 32, generator=gen),
        torch.arange(steps).expand(batch, steps).contiguous(),
        torch.ones(batch, steps, dtype=torch.bool),
    )
    return state_tensors(state)


def _run(role):
    out: dict[str, object] = {}

    def target():
        try:
            out["result"] = role.batch_step()
        except BaseException as exc:  # surfaced by the test
            out["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    return worker, out


def _answer_backward(link, step_meta: dict) -> torch.Tensor:
    """Take this client's h_B, send a random dh_B like it; returns the dh_A that comes back."""
    h_b = link.recv(10)
    assert h_b.meta["op"] == "h_B"
    grad = torch.randn_like(h_b.tensors["hidden"])
    link.send({"grad": grad}, {"op": "bwd", "loss": 1.0, "tokens": 12, **step_meta}, tag="dh_B")
    back = link.recv(10)
    assert back.meta["op"] == "dh_A"
    return back.tensors["grad"]


def test_a_client_running_ahead_is_served_in_order(make_server):
    """c0 sends both micro-batches' h_A and then its first dh_B before c1's second h_A arrives."""
    role, c0, c1 = make_server(ClientBatchServerRole)
    gen = torch.Generator().manual_seed(1)
    worker, out = _run(role)
    meta = state_meta(op="fwd", head_trains=True, mbs=2)
    c0.send(_h_a(gen, 2, 5), {**meta, "mb": 0, "loss_tokens": 8}, tag="h_A")
    c0.send(_h_a(gen, 1, 7), {**meta, "mb": 1, "loss_tokens": 8}, tag="h_A")
    c1.send(_h_a(gen, 3, 4), {**meta, "mb": 0, "loss_tokens": 4}, tag="h_A")
    first = c0.recv(10)  # h_B of micro-batch 0; c0 answers at once, ahead of c1's micro-batch 1
    assert first.meta["op"] == "h_B" and first.tensors["hidden"].shape == (2, 5, 32)
    c0.send(
        {"grad": torch.randn(2, 5, 32, generator=gen)}, {"op": "bwd", "mb": 0, "loss": 1.0, "tokens": 10}, tag="dh_B"
    )
    c1.send(_h_a(gen, 2, 6), {**meta, "mb": 1, "loss_tokens": 4}, tag="h_A")
    assert c1.recv(10).meta["op"] == "h_B"
    c1.send(
        {"grad": torch.randn(3, 4, 32, generator=gen)}, {"op": "bwd", "mb": 0, "loss": 2.0, "tokens": 12}, tag="dh_B"
    )
    for link in (c0, c1):  # h_B of micro-batch 1
        h_b = link.recv(10)
        assert h_b.meta["op"] == "h_B"
        meta = {"op": "bwd", "mb": 1, "last": True, "loss": 1.0, "tokens": 12}
        link.send({"grad": torch.randn_like(h_b.tensors["hidden"])}, meta, tag="dh_B")
    dh_a = {name: [link.recv(10) for _ in range(2)] for link, name in ((c0, "c0"), (c1, "c1"))}
    worker.join(10)
    assert not worker.is_alive() and "error" not in out, out.get("error")
    assert set(out["result"]) == {"c0", "c1"}  # type: ignore[arg-type]
    assert all(m.meta["op"] == "dh_A" for msgs in dh_a.values() for m in msgs)
    shapes = {name: [tuple(m.tensors["grad"].shape) for m in msgs] for name, msgs in dh_a.items()}
    assert shapes == {"c0": [(2, 5, 32), (1, 7, 32)], "c1": [(3, 4, 32), (2, 6, 32)]}  # micro-batch order
    assert all(
        torch.isfinite(m.tensors["grad"]).all() and m.tensors["grad"].abs().sum() > 0
        for ms in dh_a.values()
        for m in ms
    )
    assert not role.dropped


def test_a_client_breaking_the_protocol_is_dropped_and_the_step_goes_on(make_server):
    role, c0, c1 = make_server(ClientBatchServerRole)
    gen = torch.Generator().manual_seed(2)
    worker, out = _run(role)
    c1.send({"grad": torch.randn(2, 3, 32)}, {"op": "bwd", "loss": 1.0, "tokens": 6}, tag="dh_B")  # no h_A first
    c0.send(_h_a(gen, 2, 5), state_meta(op="fwd", head_trains=True), tag="h_A")
    dh_a = _answer_backward(c0, {"loss_tokens": 8})
    worker.join(10)
    assert not worker.is_alive() and "error" not in out, out.get("error")
    assert list(out["result"]) == ["c0"]  # type: ignore[call-overload]
    assert "protocol" in role.dropped["c1"] and role.active == ["c0"]
    assert dh_a.shape == (2, 5, 32)


def test_a_bad_micro_batch_count_drops_that_client(make_server):
    role, c0, c1 = make_server(ClientBatchServerRole)
    gen = torch.Generator().manual_seed(3)
    worker, out = _run(role)
    c1.send(_h_a(gen, 2, 5), state_meta(op="fwd", head_trains=True, mb=0, mbs=10**9, loss_tokens=3), tag="h_A")
    c0.send(_h_a(gen, 2, 5), state_meta(op="fwd", head_trains=True, mb=0, mbs=1, loss_tokens=8), tag="h_A")
    _answer_backward(c0, {"mb": 0, "last": True})
    worker.join(10)
    assert not worker.is_alive() and "error" not in out, out.get("error")
    assert list(out["result"]) == ["c0"]  # type: ignore[call-overload]
    assert "mbs" in role.dropped["c1"]


def test_a_malformed_h_a_or_dh_b_drops_that_client_and_the_step_goes_on(make_server):
    role, c0, c1 = make_server(ClientBatchServerRole)
    gen = torch.Generator().manual_seed(4)
    worker, out = _run(role)
    c0.send(_h_a(gen, 2, 5), state_meta(op="fwd", head_trains=True), tag="h_A")
    c1.send(_h_a(gen, 3, 4), state_meta(op="fwd", head_trains=True), tag="h_A")
    assert c1.recv(10).meta["op"] == "h_B"
    c1.send({"grad": torch.randn(3, 5, 32)}, {"op": "bwd", "loss": 1.0, "tokens": 9, "loss_tokens": 6}, tag="dh_B")
    dh_a = _answer_backward(c0, {"loss_tokens": 8})
    worker.join(10)
    assert not worker.is_alive() and "error" not in out, out.get("error")
    assert list(out["result"]) == ["c0"]  # type: ignore[call-overload]
    assert "dh_B (3, 5, 32) for h_B of shape (3, 4, 32)" in role.dropped["c1"]
    assert dh_a.shape == (2, 5, 32) and torch.isfinite(dh_a).all()

    worker, out = _run(role)  # the next step: c1 is out; c0 alone, with a bad h_A from nobody else
    c0.send({"hidden": torch.randn(2, 5)}, state_meta(op="fwd", head_trains=True), tag="h_A")  # not (B, T, H)
    worker.join(10)
    assert isinstance(out.get("error"), RuntimeError) and "every client has dropped out" in str(out["error"])
