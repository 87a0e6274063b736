"""SplitState's wire version: ``to_wire`` carries it, and so does ``wire_meta`` for a message whose
tensors are the state's; a receiver refuses a state whose version is missing or not its own."""

from __future__ import annotations

import pytest
import torch

from fedcore.model import SplitState
from fedcore.model.state import WIRE_VERSION, WIRE_VERSION_META


def _state() -> SplitState:
    return SplitState(torch.randn(2, 5, 8), torch.arange(5).expand(2, 5).contiguous(), torch.ones(2, 5))


def test_wire_meta_names_this_sides_version_and_reads_back():
    meta = SplitState.wire_meta()
    assert meta == {WIRE_VERSION_META: WIRE_VERSION}
    assert SplitState.wire_version({"op": "fwd", **meta}) == WIRE_VERSION
    assert _state().to_wire()["version"] == WIRE_VERSION


def test_a_message_without_a_version_is_refused():
    with pytest.raises(ValueError, match="no SplitState wire version"):
        SplitState.wire_version({"op": "fwd"})


@pytest.mark.parametrize("version", [WIRE_VERSION + 1, 0, None, str(WIRE_VERSION), float(WIRE_VERSION), True])
def test_another_version_is_refused_in_meta_and_in_the_wire_dict(version):
    with pytest.raises(ValueError, match="wire version"):
        SplitState.wire_version({WIRE_VERSION_META: version})
    wire = _state().to_wire()
    wire["version"] = version
    with pytest.raises(ValueError, match="wire version"):
        SplitState.from_wire(wire)


def test_from_wire_needs_the_version():
    wire = _state().to_wire()
    del wire["version"]
    with pytest.raises(ValueError, match="wire version None"):
        SplitState.from_wire(wire)
