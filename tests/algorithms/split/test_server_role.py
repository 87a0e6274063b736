"""A client whose message breaks the split protocol (a malformed h_A, a dh_B of the wrong shape, a
non-finite LoRA upload, an unexpected op) is dropped; the server and the other clients go on."""

from __future__ import annotations

import queue
import threading

import pytest
import torch
from fedcore.transport import InProcessHub, TransportError
from fedcore.transport.messages import Message

from fedcore.algorithms.split.hierarchical import HierarchicalServerRole
from fedcore.algorithms.split.server_role import SplitServerRole
from fedcore.algorithms.split.wire import state_meta, state_tensors
from fedcore.model import SplitState


def _h_a(batch: int, steps: int, hidden: int = 32) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(batch * 100 + steps)
    positions = torch.arange(steps).expand(batch, steps).contiguous()
    return state_tensors(SplitState(torch.randn(batch, steps, hidden, generator=gen), positions))


def _in_thread(fn):
    out: dict[str, object] = {}

    def target():
        try:
            out["result"] = fn()
        except BaseException as exc:  # surfaced by the test
            out["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    return worker, out


def test_a_malformed_h_a_drops_that_client_while_the_awaited_one_is_served(make_server):
    role, c0, c1 = make_server(SplitServerRole)
    worker, out = _in_thread(lambda: role._serve_until("c0", "done"))
    c1.send(_h_a(2, 5, hidden=7), state_meta(op="fwd", head_trains=True), tag="h_A")  # the body takes hidden 32
    c0.send(_h_a(2, 5), state_meta(op="fwd", head_trains=True), tag="h_A")
    h_b = c0.recv(10)
    assert h_b.meta["op"] == "h_B"
    c0.send({"grad": torch.randn(2, 5, 32)}, {"op": "bwd", "loss": 1.0, "tokens": 10}, tag="dh_B")
    assert c0.recv(10).meta["op"] == "dh_A"
    c0.send({}, {"op": "done", "reports": [[1.0, 10, 0.1]]}, tag="control")
    worker.join(10)
    assert "error" not in out, out.get("error")
    assert out["result"].meta["op"] == "done"  # type: ignore[attr-defined]
    assert "protocol" in role.dropped["c1"] and "(B, T, 32)" in role.dropped["c1"]
    assert role.active == ["c0"]
    assert role.reports_of(out["result"], 1) == [(1.0, 10, 0.1)]


def test_a_dh_b_of_the_wrong_shape_from_the_awaited_client_drops_it(make_server):
    role, c0, _ = make_server(SplitServerRole)
    worker, out = _in_thread(lambda: role._serve_until("c0", "done"))
    c0.send(_h_a(2, 5), state_meta(op="fwd", head_trains=True), tag="h_A")
    assert c0.recv(10).meta["op"] == "h_B"
    c0.send({"grad": torch.randn(2, 4, 32)}, {"op": "bwd", "loss": 1.0, "tokens": 10}, tag="dh_B")
    worker.join(10)
    assert isinstance(out.get("error"), TransportError) and "dropped" in str(out["error"])
    assert "dh_B (2, 4, 32) for h_B of shape (2, 5, 32)" in role.dropped["c0"]
    assert role.drop_if_gone(out["error"], "c0")  # type: ignore[arg-type]  # the callers' check: already handled


def test_malformed_step_reports_drop_that_client(make_server):
    role, _, _ = make_server(SplitServerRole)
    bad = Message(peer="c1", kind="control", meta={"op": "done", "reports": [[1.0, "ten", 0.1]]},
                  tensors={}, session="c1", step=0, seq=1, nbytes=0)  # fmt: skip
    assert role.reports_of(bad, 1) == []
    assert "tokens='ten'" in role.dropped["c1"]


def test_a_non_finite_lora_upload_drops_that_client_and_the_others_are_averaged(make_server):
    role, c0, c1 = make_server(SplitServerRole)
    worker, out = _in_thread(role.average)
    for link, value in ((c0, 0.5), (c1, float("nan"))):
        assert link.recv(10).meta["op"] == "upload"
        link.send({"head.a": torch.full((2, 3), value)}, {"op": "lora"}, tag="lora_up")
    load = c0.recv(10)
    assert load.meta["op"] == "load" and torch.equal(load.tensors["head.a"], torch.full((2, 3), 0.5))
    c0.send({}, {"op": "loaded"}, tag="control")
    worker.join(10)
    assert "error" not in out, out.get("error")
    assert "not a finite floating tensor" in role.dropped["c1"] and role.active == ["c0"]


def test_a_lora_upload_of_other_shapes_is_refused_against_the_last_average(make_server):
    role, c0, c1 = make_server(SplitServerRole)
    role._last_avg = {"head.a": torch.zeros(2, 3)}
    worker, out = _in_thread(role.average)
    for link, shape in ((c0, (2, 3)), (c1, (3, 2))):
        assert link.recv(10).meta["op"] == "upload"
        link.send({"head.a": torch.ones(shape)}, {"op": "lora"}, tag="lora_up")
    assert c0.recv(10).meta["op"] == "load"
    c0.send({}, {"op": "loaded"}, tag="control")
    worker.join(10)
    assert "error" not in out, out.get("error")
    assert "shape (3, 2), expected (2, 3)" in role.dropped["c1"]


@pytest.mark.parametrize("op", ["bwd", "fwd"])
def test_a_hierarchical_replica_reports_a_bad_message_instead_of_failing(op, make_server):
    parts = make_server(SplitServerRole)[0].parts
    role = HierarchicalServerRole(InProcessHub().server(), [parts, parts], ["c0", "c1"], [1.0, 1.0], timeout=10)
    inbox: queue.Queue = queue.Queue()
    errors: list[BaseException] = []
    tensors = {"grad": torch.randn(2, 5, 32)} if op == "bwd" else _h_a(2, 5, hidden=9)
    meta = state_meta(op=op)
    inbox.put(Message(peer="c0", kind="x", meta=meta, tensors=tensors, session="c0", step=0, seq=1, nbytes=0))
    inbox.put(None)
    role._worker("c0", inbox, errors)
    assert not errors
    peer, exc = role._misbehaved.popleft()
    assert peer == "c0" and "protocol" in str(exc)
    assert ("without its h_A" if op == "bwd" else "(B, T, 32)") in str(exc)


def test_a_non_finite_h_a_is_refused_before_it_reaches_the_body(make_server):
    role, c0, c1 = make_server(SplitServerRole)
    worker, out = _in_thread(lambda: role._serve_until("c0", "eval_result"))
    poisoned = _h_a(2, 5)
    poisoned["hidden"][1, 2, 3] = float("nan")
    c1.send(poisoned, state_meta(op="eval_fwd"), tag="eval_h_A")
    c0.send({}, {"op": "eval_result", "loss": 2.0}, tag="control")
    worker.join(10)
    assert "error" not in out, out.get("error")
    assert "non-finite" in role.dropped["c1"] and role.active == ["c0"]
