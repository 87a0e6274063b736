"""Turning named tensors into chunked wire messages, and chunks back into tensors (no sockets)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from fedcore.codec import CODECS, PART_SEP, Codec, get_codec

from . import wire
from .errors import ProtocolError
from .messages import Message, SendHandle


@dataclass
class Outgoing:
    """One transfer, prebuilt as a list of ZeroMQ messages (each a list of frames)."""

    seq: int
    kind: str  # the accounting tag (e.g. "h_A"); on the wire every transfer is of kind "data"
    messages: list[list[Any]]
    nbytes: int  # payload + header bytes
    handle: SendHandle
    keepalive: list[torch.Tensor]  # the encoded tensors whose memory the frames point into
    enqueued: float = field(default_factory=time.monotonic)
    next_index: int = 0
    trackers: list[Any] = field(default_factory=list)
    last_sent: float = 0.0
    sends: int = 0


def encode_tensors(
    tensors: Mapping[str, torch.Tensor], codec: str | Codec
) -> tuple[list[wire.TensorSpec], list[torch.Tensor]]:
    """Apply ``codec``, move to CPU, make contiguous; return the tensor table and wire tensors.

    A codec that sends several parts (codes + scales) adds rows ``name#1``... after ``name``.
    """
    enc = get_codec(codec)
    specs, wires, offset = [], [], 0
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"tensor {name!r} is a {type(tensor).__name__}, not a torch.Tensor")
        if PART_SEP in name:
            raise ValueError(f"tensor name {name!r} contains {PART_SEP!r}, which the wire reserves for codec parts")
        if tensor.dtype not in wire.DTYPE_NAMES:
            raise ValueError(f"tensor {name!r}: dtype {tensor.dtype} cannot be sent ({sorted(wire.DTYPES)})")
        if tensor.requires_grad:
            tensor = tensor.detach()
        parts, orig = enc.encode(tensor)
        for i, part in enumerate(parts):
            out = part.to("cpu").contiguous()  # non-contiguous tensors are copied, never refused
            nbytes = out.numel() * out.element_size()
            offset = wire.align(offset)
            specs.append(
                wire.TensorSpec(
                    name if i == 0 else f"{name}{PART_SEP}{i}",
                    wire.DTYPE_NAMES[out.dtype],
                    tuple(out.shape),
                    offset,
                    nbytes,
                    enc.name,
                    wire.DTYPE_NAMES[orig] if orig is not None else None,
                )
            )
            wires.append(out)
            offset += nbytes
    return specs, wires


def build_outgoing(
    *,
    seq: int,
    session: str,
    step: int,
    kind: str,
    meta: Mapping[str, Any],
    codec: str | Codec,
    tensors: Mapping[str, torch.Tensor],
    chunk_bytes: int,
    max_bytes: int,
    tag: str = "data",
    resend: bool = False,
) -> Outgoing:
    """Prebuild the messages of one transfer: header + first chunk, then chunk messages."""
    specs, wires = encode_tensors(tensors, codec)
    total = specs[-1].offset + specs[-1].nbytes if specs else 0
    if total > max_bytes:
        raise ValueError(f"transfer of {total} bytes exceeds max_transfer_bytes={max_bytes}")
    decoded = sum(checked_size(group) for group in group_parts(specs))  # what the receiver will check
    if decoded > max_bytes:
        raise ValueError(f"transfer decodes to {decoded} bytes at the receiver, over max_transfer_bytes={max_bytes}")
    views: list[memoryview] = []
    end = 0
    for spec, t in zip(specs, wires, strict=True):
        if spec.offset > end:
            views.append(_PADDING[: spec.offset - end])
        views.append(wire.tensor_bytes(t))
        end = spec.offset + spec.nbytes
    pieces: list[list[memoryview]] = [[] for _ in range(wire.chunk_count(total, chunk_bytes))]
    pos = 0
    for view in views:  # cut the concatenated payload at chunk boundaries
        start = 0
        while start < len(view):
            idx, room = pos // chunk_bytes, chunk_bytes - pos % chunk_bytes
            take = min(room, len(view) - start)
            pieces[idx].append(view[start : start + take])
            start += take
            pos += take
    head = {
        "v": wire.VERSION,
        "kind": kind,
        "tag": tag,
        "rs": resend,  # the sender resends unacknowledged transfers (go-back-N)
        "session": session,
        "step": step,
        "seq": seq,
        "codec": get_codec(codec).name,
        "meta": dict(meta),
        "tensors": [s.as_wire() for s in specs],
        "total": total,
        "chunks": len(pieces),
        "off": 0,
        "n": sum(len(p) for p in pieces[0]),
    }
    messages = [[wire.pack(head), *pieces[0]]]
    off = sum(len(p) for p in pieces[0])
    for chunk in pieces[1:]:
        n = sum(len(p) for p in chunk)
        messages.append([wire.pack({"v": wire.VERSION, "kind": "chunk", "seq": seq, "off": off, "n": n}), *chunk])
        off += n
    header_bytes = sum(len(m[0]) for m in messages)
    return Outgoing(seq, tag, messages, total + header_bytes, SendHandle(seq), wires)


def group_parts(specs: list[wire.TensorSpec]) -> list[list[wire.TensorSpec]]:
    """Regroup a tensor table into tensors (``name``, ``name#1``, ...), each checked by its codec.

    Raises ProtocolError for an unknown codec, parts out of order or of mixed codecs, or parts
    that the codec would not have produced.
    """
    groups: list[list[wire.TensorSpec]] = []
    for spec in specs:
        base, sep, index = spec.name.partition(PART_SEP)
        if not sep:
            groups.append([spec])
            continue
        if not groups or groups[-1][0].name != base or index != str(len(groups[-1])):
            raise ProtocolError(f"tensor part {spec.name!r} does not follow its tensor")
        if spec.codec != groups[-1][0].codec or spec.orig_dtype != groups[-1][0].orig_dtype:
            raise ProtocolError(f"tensor part {spec.name!r} differs in codec or original dtype from {base!r}")
        groups[-1].append(spec)
    return groups


def checked_size(group: list[wire.TensorSpec]) -> int:
    """Decoded bytes of one tensor's parts, as its codec validates them (ProtocolError if not)."""
    head = group[0]
    if head.codec not in CODECS:
        raise ProtocolError(f"tensor {head.name!r}: unknown codec {head.codec!r}")
    try:
        return CODECS[head.codec].check([(s.dtype, s.shape) for s in group], head.orig_dtype)
    except ValueError as exc:
        raise ProtocolError(f"tensor {head.name!r}: {exc}") from None


def decode_tensor(group: list[wire.TensorSpec], received: list[torch.Tensor]) -> torch.Tensor:
    """Undo the codec of one tensor's parts as they arrived (validated by ``checked_size``)."""
    head = group[0]
    orig = wire.DTYPES[head.orig_dtype] if head.orig_dtype else None
    return get_codec(head.codec).decode(received, orig)


_PADDING = memoryview(bytes(wire.ALIGN))


class Incoming:
    """A transfer being received: header validated, buffer allocated, chunks written in order."""

    def __init__(self, header: dict[str, Any], *, max_bytes: int, allocate) -> None:
        for key in ("session", "codec", "tag"):
            if not isinstance(header.get(key), str) or len(header[key]) > 64:
                raise ProtocolError(f"data header needs a short str {key!r}")
        for key in ("step", "seq", "chunks", "total"):
            wire._int(header.get(key), f"data header {key!r}")
        if not isinstance(header.get("meta"), dict):
            raise ProtocolError("data header 'meta' must be a map")
        self.specs, total = wire.parse_table(header.get("tensors"), max_bytes=max_bytes)
        if total != header["total"]:
            raise ProtocolError(f"header total {header['total']} != tensor table sum {total}")
        wire._int(header.get("n"), "data header 'n'", 0, total)
        self.groups = group_parts(self.specs)
        decoded = sum(checked_size(group) for group in self.groups)
        if decoded > max_bytes:  # a codec may widen on decode: the cap holds for the result too
            raise ProtocolError(f"transfer decodes to {decoded} bytes, over the {max_bytes}-byte cap")
        self.header = header
        self.total = total
        self.buffer: torch.Tensor = allocate(total)  # uint8 (total,), maybe pinned
        self.received = 0
        self.touched = time.monotonic()

    def write(self, off: int, n: int, frames_nbytes: int) -> None:
        """Record that ``n`` bytes at payload offset ``off`` arrived (frames were recv_into'd)."""
        if off != self.received or n != frames_nbytes or self.received + n > self.total:
            raise ProtocolError(f"chunk at {off} of {n} bytes does not continue the transfer at {self.received}")
        self.received += n
        self.touched = time.monotonic()

    def view(self) -> memoryview:
        """The unfilled rest of the buffer, for recv_into."""
        return memoryview(self.buffer.numpy()).cast("B")[self.received :]  # type: ignore[arg-type]

    @property
    def complete(self) -> bool:
        return self.received == self.total

    def message(self, peer: str, release=None) -> Message:
        h = self.header
        tensors = {
            group[0].name: decode_tensor(group, [wire.tensor_from_bytes(self.buffer, spec) for spec in group])
            for group in self.groups
        }
        return Message(
            peer=peer,
            kind=h["tag"],
            meta=h["meta"],
            tensors=tensors,
            session=h["session"],
            step=h["step"],
            seq=h["seq"],
            nbytes=self.total,
            _buffer=self.buffer if release is not None else None,
            _release=release,
        )
