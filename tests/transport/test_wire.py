"""Header and tensor-table validation, unit by unit (the fuzz test covers them live)."""

from __future__ import annotations

import msgpack
import pytest
import torch
from fedcore.transport import ProtocolError
from fedcore.transport.assembly import Incoming, build_outgoing
from fedcore.transport.wire import ALIGN, HEADER_CAP, align, pack, parse_table, unpack


def _header(**over):
    out = build_outgoing(
        seq=1,
        session="s",
        step=0,
        kind="data",
        meta={},
        codec="raw",
        tensors={"a": torch.ones(3), "b": torch.arange(5, dtype=torch.int8)},
        chunk_bytes=1 << 20,
        max_bytes=1 << 20,
    )
    head = unpack(out.messages[0][0])
    head.update(over)
    return head


def test_offsets_are_aligned_and_table_parses():
    head = _header()
    specs, total = parse_table(head["tensors"], max_bytes=1 << 20)
    assert [s.offset for s in specs] == [0, align(12)] and align(12) == ALIGN
    assert total == ALIGN + 5 == head["total"]


@pytest.mark.parametrize(
    "row,match",
    [
        (["a", "float32", [3], 0, 11, "raw", None], "nbytes 11"),
        (["a", "object", [3], 0, 12, "raw", None], "not allowed"),
        (["a", "float32", [-1], 0, 0, "raw", None], "dim must be an int"),
        (["a", "float32", [3], 8, 12, "raw", None], "out of place"),
        (["a", "float32", [1] * 9, 0, 4, "raw", None], "<= 8 dims"),
        (["", "float32", [3], 0, 12, "raw", None], "unique non-empty"),
        (["a", "float32", [3], 0, 12, "raw"], "row must be"),
        (["a", "float32", [2**30, 2**30], 0, 2**62, "raw", None], "nbytes|cap"),
        (["a", "float32", [3], 0, True, "raw", None], "nbytes must be an int"),
    ],
)
def test_bad_table_rows(row, match):
    with pytest.raises(ProtocolError, match=match):
        parse_table([row], max_bytes=1 << 30)


def test_per_transfer_cap_is_checked_before_allocation():
    allocated = []
    head = _header()
    with pytest.raises(ProtocolError, match="cap"):
        Incoming(head, max_bytes=16, allocate=lambda n: allocated.append(n))
    assert allocated == []


@pytest.mark.parametrize(
    "frame,match",
    [
        (b"\x00" * (HEADER_CAP + 1), "exceeds"),
        (b"\xc1", "malformed"),
        (msgpack.packb([1, 2]), "must be a map"),
        (msgpack.packb({"v": 2, "kind": "data"}), "version"),
        (msgpack.packb({"v": 1, "kind": "nope"}), "unknown message kind"),
        (msgpack.packb({1: 2}), "malformed"),  # strict_map_key: int keys refused
        (msgpack.packb(msgpack.ExtType(1, b"x")), "ext type"),
    ],
)
def test_unpack_refuses(frame, match):
    with pytest.raises(ProtocolError, match=match):
        unpack(frame)


def test_pack_refuses_oversized_headers():
    with pytest.raises(ValueError, match="cap"):
        pack({"v": 1, "meta": "x" * HEADER_CAP})


def test_incoming_refuses_unknown_codec_and_bad_fields():
    head = _header()
    head["tensors"][0][5] = "zip"
    with pytest.raises(ProtocolError, match="unknown codec"):
        Incoming(head, max_bytes=1 << 20, allocate=lambda n: torch.empty(n, dtype=torch.uint8))
    with pytest.raises(ProtocolError, match="meta"):
        Incoming(_header(meta=[1]), max_bytes=1 << 20, allocate=lambda n: torch.empty(n, dtype=torch.uint8))
    with pytest.raises(ProtocolError, match="total"):
        Incoming(_header(total=3), max_bytes=1 << 20, allocate=lambda n: torch.empty(n, dtype=torch.uint8))


def test_chunks_must_continue_the_transfer():
    inc = Incoming(_header(), max_bytes=1 << 20, allocate=lambda n: torch.empty(n, dtype=torch.uint8))
    with pytest.raises(ProtocolError, match="does not continue"):
        inc.write(8, 4, 4)
    inc.write(0, 10, 10)
    with pytest.raises(ProtocolError):
        inc.write(10, 100, 100)  # past the end


def test_codec_and_dtype_must_agree():
    head = _header()
    head["tensors"][0][1:3] = ["uint8", [12]]  # 12 bytes of uint8 ...
    head["tensors"][0][5:7] = ["fp16", "complex64"]  # ... claiming to decode to complex64
    with pytest.raises(ProtocolError, match="does not turn"):
        Incoming(head, max_bytes=1 << 20, allocate=lambda n: torch.empty(n, dtype=torch.uint8))


def _int8_header():
    out = build_outgoing(
        seq=1, session="s", step=0, kind="data", meta={}, codec="int8",
        tensors={"h": torch.randn(2, 3, 8), "ids": torch.arange(4)}, chunk_bytes=1 << 20, max_bytes=1 << 20,
    )  # fmt: skip
    return unpack(out.messages[0][0])


def _incoming(head, cap=1 << 20):
    return Incoming(head, max_bytes=cap, allocate=lambda n: torch.empty(n, dtype=torch.uint8))


def test_multi_part_codecs_are_regrouped_and_checked():
    head = _int8_header()
    names = [row[0] for row in head["tensors"]]
    assert names == ["h", "h#1", "ids"]
    assert [g[0].name for g in _incoming(head).groups] == ["h", "ids"]
    orphan = _int8_header()
    orphan["tensors"][1][0] = "x#1"  # a part whose tensor is not the one before it
    with pytest.raises(ProtocolError, match="does not follow"):
        _incoming(orphan)
    mixed = _int8_header()
    mixed["tensors"][1][5] = "fp8"
    with pytest.raises(ProtocolError, match="differs"):
        _incoming(mixed)
    lone = _int8_header()
    del lone["tensors"][1]  # codes without scales
    lone["tensors"][1][3] = align(lone["tensors"][0][3] + lone["tensors"][0][4])
    lone["total"] = lone["n"] = lone["tensors"][1][3] + lone["tensors"][1][4]
    with pytest.raises(ProtocolError, match="codes and scales"):
        _incoming(lone)
    # the decoded size (fp32: 4 bytes per code) counts against the cap, not the wire size
    with pytest.raises(ProtocolError, match="decodes to"):
        _incoming(_int8_header(), cap=head["total"] + 8)
