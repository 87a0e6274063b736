"""Wire format: a msgpack header frame plus raw payload frames. Never pickle.

A transfer (one logical message with named tensors) travels as one or more ZeroMQ messages of at
most ``chunk_bytes`` payload each, because ZeroMQ delivers a multipart message whole or not at
all. The first carries the full header; the rest carry a small chunk header. Every header is
size-checked before it is unpacked, unpacked without ext types or non-string keys, and validated
against an allow-list before anything is allocated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import torch

# the wire's dtype allow-list lives in the codec layer; re-exported here for existing users
from fedcore.codec.dtypes import DTYPE_NAMES as DTYPE_NAMES
from fedcore.codec.dtypes import DTYPES as DTYPES

from .errors import ProtocolError

VERSION = 1
HEADER_CAP = 64 * 1024  # bytes of msgpack per header frame, checked before unpacking
MAX_TENSORS = 4096
MAX_NDIM = 8
MAX_NAME = 256
ALIGN = 64  # every tensor starts at a multiple of this in the payload: zero-copy views of any dtype
KINDS = ("data", "chunk", "ack", "error", "ping", "pong", "bye", "rekey")


@dataclass(frozen=True)
class TensorSpec:
    """One row of a header's tensor table: where a tensor lies in the transfer's payload."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int  # byte offset in the concatenated payload
    nbytes: int
    codec: str = "raw"
    orig_dtype: str | None = None  # dtype before the codec (e.g. float32 sent as fp16)

    def as_wire(self) -> list[Any]:
        return [self.name, self.dtype, list(self.shape), self.offset, self.nbytes, self.codec, self.orig_dtype]


def pack(obj: Mapping[str, Any]) -> bytes:
    """msgpack a header dict; refuses headers over HEADER_CAP (metadata belongs in tensors)."""
    data = msgpack.packb(obj, use_bin_type=True)
    if len(data) > HEADER_CAP:
        raise ValueError(f"header is {len(data)} bytes, over the {HEADER_CAP}-byte cap: send large data as tensors")
    return data


def _reject_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(f"msgpack ext type {code} is not allowed in headers")


def unpack(frame: bytes | memoryview) -> dict[str, Any]:
    """Safely unpack one header frame: size first, no ext types, str keys only, a dict result.

    ``unpackb`` bounds every container and string by the (already capped) frame length.
    """
    if len(frame) > HEADER_CAP:
        raise ProtocolError(f"header frame of {len(frame)} bytes exceeds the {HEADER_CAP}-byte cap")
    try:
        obj = msgpack.unpackb(bytes(frame), raw=False, strict_map_key=True, ext_hook=_reject_ext)
    except ProtocolError:
        raise
    except Exception as err:  # msgpack raises several types for malformed input
        raise ProtocolError(f"malformed msgpack header: {type(err).__name__}: {err}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"header must be a map, got {type(obj).__name__}")
    if obj.get("v") != VERSION:
        raise ProtocolError(f"unsupported wire version {obj.get('v')!r} (this side speaks {VERSION})")
    if obj.get("kind") not in KINDS:
        raise ProtocolError(f"unknown message kind {obj.get('kind')!r}")
    return obj


def _int(value: Any, what: str, lo: int = 0, hi: int = 2**62) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise ProtocolError(f"{what} must be an int in [{lo}, {hi}], got {value!r}")
    return value


def parse_table(raw: Any, *, max_bytes: int) -> tuple[list[TensorSpec], int]:
    """Validate a header's tensor table; return the specs and the payload size in bytes.

    Checks: a list of at most MAX_TENSORS rows; unique str names; allowed dtypes; shapes of at
    most MAX_NDIM non-negative dims; nbytes == prod(shape) * itemsize; offsets packed from 0 at ALIGN boundaries;
    the total within ``max_bytes`` (so nothing over the cap is ever allocated).
    """
    if not isinstance(raw, list) or len(raw) > MAX_TENSORS:
        raise ProtocolError(f"tensor table must be a list of at most {MAX_TENSORS} rows")
    specs, names, offset = [], set(), 0
    for row in raw:
        if not isinstance(row, list) or len(row) != 7:
            raise ProtocolError("tensor table row must be [name, dtype, shape, offset, nbytes, codec, orig_dtype]")
        name, dtype, shape, off, nbytes, codec, orig = row
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME or name in names:
            raise ProtocolError(f"tensor name must be a unique non-empty str of <= {MAX_NAME} chars, got {name!r}")
        names.add(name)
        if dtype not in DTYPES:
            raise ProtocolError(f"tensor {name!r}: dtype {dtype!r} is not allowed ({sorted(DTYPES)})")
        if orig is not None and orig not in DTYPES:
            raise ProtocolError(f"tensor {name!r}: original dtype {orig!r} is not allowed")
        if not isinstance(codec, str) or len(codec) > 32:
            raise ProtocolError(f"tensor {name!r}: codec must be a short str")
        if not isinstance(shape, list) or len(shape) > MAX_NDIM:
            raise ProtocolError(f"tensor {name!r}: shape must be a list of <= {MAX_NDIM} dims")
        dims = tuple(_int(d, f"tensor {name!r} dim", 0, max_bytes) for d in shape)
        expected = math.prod(dims) * DTYPES[dtype].itemsize
        if _int(nbytes, f"tensor {name!r} nbytes") != expected:
            raise ProtocolError(f"tensor {name!r}: nbytes {nbytes} != prod{dims} * itemsize = {expected}")
        offset = align(offset)
        if _int(off, f"tensor {name!r} offset") != offset:
            raise ProtocolError(f"tensor {name!r}: offset {off} out of place (expected {offset})")
        offset += nbytes
        if offset > max_bytes:
            raise ProtocolError(f"transfer of more than {max_bytes} bytes refused (per-transfer cap)")
        specs.append(TensorSpec(name, dtype, dims, off, nbytes, codec, orig))
    return specs, offset


def align(offset: int) -> int:
    """``offset`` rounded up to the next multiple of ALIGN."""
    return -(-offset // ALIGN) * ALIGN


def chunk_count(total: int, chunk_bytes: int) -> int:
    """Messages a payload of ``total`` bytes travels in (at least one, for the header)."""
    return max(1, -(-total // chunk_bytes))


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """A zero-copy byte view of a contiguous CPU tensor (any dtype, 0-d and empty included)."""
    flat = tensor.reshape(-1).view(torch.uint8) if tensor.numel() else torch.empty(0, dtype=torch.uint8)
    return memoryview(flat.numpy()).cast("B")  # type: ignore[arg-type]  # ndarray is a buffer


def tensor_from_bytes(buffer: torch.Tensor, spec: TensorSpec) -> torch.Tensor:
    """View ``buffer`` (uint8, the whole payload) as the tensor ``spec`` describes (no copy)."""
    raw = buffer[spec.offset : spec.offset + spec.nbytes]
    dtype = DTYPES[spec.dtype]
    if spec.nbytes == 0:
        return torch.empty(spec.shape, dtype=dtype, device=buffer.device)
    return raw.view(dtype).reshape(spec.shape)
