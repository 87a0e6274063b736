"""A split state travels with its sender's SplitState wire version in the message meta; a message
whose version is missing or not the receiver's is a ``ProtocolError``: the server drops that
client and serves the others, and a client refuses such an h_B from the server."""

from __future__ import annotations

import queue
import threading

import pytest
import torch
from fedcore.transport import InProcessHub
from fedcore.transport.messages import Message

from fedcore.algorithms.split.client_batch import ClientBatchServerRole
from fedcore.algorithms.split.client_role import remote_body
from fedcore.algorithms.split.hierarchical import HierarchicalServerRole
from fedcore.algorithms.split.server_role import SplitServerRole
from fedcore.algorithms.split.wire import ProtocolError, checked_state, state_from, state_meta, state_tensors
from fedcore.model import SplitState
from fedcore.model.state import WIRE_VERSION, WIRE_VERSION_META

# the meta of an h_A from a client that sends no version, or another one
BAD_META = {
    "missing": {"op": "fwd", "head_trains": True},
    "newer": {"op": "fwd", "head_trains": True, WIRE_VERSION_META: WIRE_VERSION + 1},
    "a string": {"op": "fwd", "head_trains": True, WIRE_VERSION_META: str(WIRE_VERSION)},
}


def _state(batch: int = 2, steps: int = 5, hidden: int = 32) -> SplitState:
    gen = torch.Generator().manual_seed(batch * 100 + steps)
    return SplitState(torch.randn(batch, steps, hidden, generator=gen), torch.arange(steps).expand(batch, steps))


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


def test_every_state_message_carries_the_senders_version():
    meta = state_meta(op="h_B")
    assert meta == {"op": "h_B", WIRE_VERSION_META: WIRE_VERSION}
    state = state_from(state_tensors(_state()), meta, needs_grad=True)
    assert state.hidden.requires_grad and state.hidden.is_leaf


@pytest.mark.parametrize("case", list(BAD_META))
def test_a_state_without_this_sides_version_is_a_protocol_error(case):
    tensors = state_tensors(_state())
    with pytest.raises(ProtocolError, match="wire version"):
        state_from(tensors, BAD_META[case], needs_grad=False)
    with pytest.raises(ProtocolError, match="bad h_A: .*wire version"):
        checked_state(tensors, BAD_META[case], hidden_size=32, needs_grad=False, device="cpu")


@pytest.mark.parametrize("case", list(BAD_META))
def test_the_sequential_server_drops_a_client_whose_h_a_has_no_or_another_version(case, make_server):
    role, c0, c1 = make_server(SplitServerRole)
    worker, out = _in_thread(lambda: role._serve_until("c0", "done"))
    c1.send(state_tensors(_state()), BAD_META[case], tag="h_A")
    c0.send(state_tensors(_state()), state_meta(op="fwd", head_trains=True), tag="h_A")
    h_b = c0.recv(10)
    assert h_b.meta["op"] == "h_B" and h_b.meta[WIRE_VERSION_META] == WIRE_VERSION  # the server's h_B has it too
    c0.send({"grad": torch.randn(2, 5, 32)}, {"op": "bwd", "loss": 1.0, "tokens": 10}, tag="dh_B")
    assert c0.recv(10).meta["op"] == "dh_A"
    c0.send({}, {"op": "done", "reports": [[1.0, 10, 0.1]]}, tag="control")
    worker.join(10)
    assert "error" not in out, out.get("error")
    assert "protocol" in role.dropped["c1"] and "wire version" in role.dropped["c1"]
    assert role.active == ["c0"]


def test_the_client_batch_server_drops_a_client_whose_h_a_has_another_version(make_server):
    role, c0, c1 = make_server(ClientBatchServerRole)
    worker, out = _in_thread(role.batch_step)
    c1.send(state_tensors(_state(3, 4)), BAD_META["newer"], tag="h_A")
    c0.send(state_tensors(_state()), state_meta(op="fwd", head_trains=True), tag="h_A")
    h_b = c0.recv(10)
    assert h_b.meta["op"] == "h_B" and h_b.meta[WIRE_VERSION_META] == WIRE_VERSION
    meta = {"op": "bwd", "loss": 1.0, "tokens": 10, "loss_tokens": 8}
    c0.send({"grad": torch.randn_like(h_b.tensors["hidden"])}, meta, tag="dh_B")
    assert c0.recv(10).meta["op"] == "dh_A"
    worker.join(10)
    assert not worker.is_alive() and "error" not in out, out.get("error")
    assert list(out["result"]) == ["c0"]  # type: ignore[call-overload]
    assert f"wire version {WIRE_VERSION + 1}" in role.dropped["c1"] and role.active == ["c0"]


def test_a_hierarchical_replica_reports_an_h_a_without_a_version(make_server):
    parts = make_server(SplitServerRole)[0].parts
    role = HierarchicalServerRole(InProcessHub().server(), [parts, parts], ["c0", "c1"], [1.0, 1.0], timeout=10)
    inbox: queue.Queue = queue.Queue()
    tensors = state_tensors(_state())
    inbox.put(Message(peer="c0", kind="x", meta=BAD_META["missing"], tensors=tensors, session="c0", step=0, seq=1,
                      nbytes=0))  # fmt: skip
    inbox.put(None)
    errors: list[BaseException] = []
    role._worker("c0", inbox, errors)
    assert not errors
    peer, exc = role._misbehaved.popleft()
    assert peer == "c0" and isinstance(exc, ProtocolError) and "no SplitState wire version" in str(exc)


@pytest.mark.parametrize("meta", [{"op": "gen_h_B"}, {"op": "gen_h_B", WIRE_VERSION_META: WIRE_VERSION + 1}])
def test_a_client_refuses_an_h_b_without_its_version(meta):
    hub = InProcessHub()
    server, client = hub.server(), hub.endpoint("c0")
    body_step = remote_body(client, timeout=10)
    server.send_to("c0", state_tensors(_state()), meta, tag="gen_h_B")  # the answer waits for the request
    with pytest.raises(ProtocolError, match="wire version"):
        body_step(_state(), True)
    request = server.recv(10)  # what the client sent does carry its version
    assert request.meta["op"] == "gen_fwd" and request.meta[WIRE_VERSION_META] == WIRE_VERSION
