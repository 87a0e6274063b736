"""Overlapped transfers of device tensors through pinned host slots (double buffering).

Send: the compute stream records an event; on a side stream the device-to-host copy into pinned
slot k waits for it; a communication thread waits for the copy, hands the slot to the transport
(zero-copy) and frees the slot once libzmq released its frames. With two slots the copy of step
t+1 and the send of step t run while the next step computes. Receive: host-to-device copies run
on the side stream from the (pinned) receive buffer and the compute stream waits on their event.
On CPU the same API sends and receives directly, without streams.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from fedcore.codec import Codec

from . import wire
from .errors import PeerTimeout
from .messages import Message, SendHandle


class _Slot:
    """One pinned host buffer, grown on demand, and whether a send still reads it."""

    def __init__(self) -> None:
        self.buffer = torch.empty(0, dtype=torch.uint8)
        self.free = threading.Event()
        self.free.set()

    def views(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        sizes = [t.numel() * t.element_size() for t in tensors.values()]
        offsets, total = [], 0
        for size in sizes:
            total = wire.align(total)  # keep every view aligned as on the wire
            offsets.append(total)
            total += size
        if self.buffer.numel() < total:
            self.buffer = torch.empty(total, dtype=torch.uint8, pin_memory=True)
        out = {}
        for (name, t), off, size in zip(tensors.items(), offsets, sizes, strict=True):
            out[name] = self.buffer[off : off + size].view(t.dtype).view(t.shape)
        return out


class OverlappedSender:
    """``send`` device tensors without waiting for the copy or the wire; returns a Future of the
    transport's SendHandle. ``link`` is a Server or Client (anything with ``send_to``)."""

    def __init__(self, link: Any, *, slots: int = 2, timeout: float = 300.0):
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.link, self.timeout = link, timeout
        self.cuda = torch.cuda.is_available()
        self._slots = [_Slot() for _ in range(slots)] if self.cuda else []
        self._next = 0
        self._stream = torch.cuda.Stream() if self.cuda else None
        self._jobs: queue.Queue = queue.Queue()
        self._comm = threading.Thread(target=self._comm_loop, name="fedcore-overlap-comm", daemon=True)
        self._comm.start()

    def send(
        self,
        tensors: Mapping[str, torch.Tensor],
        meta: dict[str, Any] | None = None,
        *,
        peer: str = "server",
        step: int = 0,
        codec: str | Codec = "raw",
        tag: str = "data",
    ) -> Future:
        """Queue a send; CUDA tensors are staged through the next free pinned slot."""
        future: Future = Future()
        on_device = self.cuda and any(t.is_cuda for t in tensors.values())
        if not on_device:
            self._jobs.put((None, None, dict(tensors), meta, peer, step, codec, tag, future))
            return future
        slot = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        if not slot.free.wait(self.timeout):  # reused only after libzmq released the frames reading it
            raise PeerTimeout(f"staging slot still in use after {self.timeout} s (is the peer reading?)")
        slot.free.clear()
        computed = torch.cuda.Event()
        computed.record()  # on the current (compute) stream
        assert self._stream is not None
        with torch.cuda.stream(self._stream):
            self._stream.wait_event(computed)
            staged = slot.views(tensors)
            for name, t in tensors.items():
                staged[name].copy_(t.contiguous(), non_blocking=True)
                t.record_stream(self._stream)  # the caller may free t; the copy still reads it
            copied = torch.cuda.Event()
            copied.record(self._stream)
        self._jobs.put((slot, copied, staged, meta, peer, step, codec, tag, future))
        return future

    def _comm_loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            slot, copied, tensors, meta, peer, step, codec, tag, future = job
            try:
                if copied is not None:
                    copied.synchronize()  # reading the slot before the copy finished reads garbage
                handle: SendHandle = self.link.send_to(peer, tensors, meta, step=step, codec=codec, tag=tag)
                future.set_result(handle)
                if slot is not None and not handle.sent.wait(self.timeout):
                    raise PeerTimeout(f"send not released by libzmq within {self.timeout} s")
            except Exception as err:  # noqa: BLE001 - handed to the caller through the future
                future.set_exception(err)
            finally:
                if slot is not None:
                    slot.free.set()

    def close(self) -> None:
        self._jobs.put(None)
        self._comm.join(10)


class OverlappedReceiver:
    """``recv`` a message and start its host-to-device copies on a side stream; the current
    stream waits for them, the receive buffer is recycled once they finished."""

    def __init__(self, link: Any, device: torch.device | str | None = None):
        self.link = link
        self.device = (
            torch.device(device)
            if device is not None
            else (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
        )
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._releaser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedcore-overlap-release")

    def recv(self, timeout: float | None = None) -> tuple[Message, dict[str, torch.Tensor]]:
        """Returns (message, tensors on ``device``). On CPU the tensors are the message's own."""
        msg = self.link.recv(timeout)
        if self._stream is None:
            return msg, msg.tensors
        with torch.cuda.stream(self._stream):
            moved = {k: v.to(self.device, non_blocking=True) for k, v in msg.tensors.items()}
            done = torch.cuda.Event()
            done.record(self._stream)
        torch.cuda.current_stream(self.device).wait_event(done)
        for t in moved.values():
            t.record_stream(torch.cuda.current_stream(self.device))

        def release_when_copied() -> None:
            done.synchronize()  # the H2D copies read the receive buffer until then
            msg.release()

        self._releaser.submit(release_when_copied)
        msg.tensors = {}  # its CPU views will be recycled: only the device copies are the caller's
        return msg, moved

    def close(self) -> None:
        self._releaser.shutdown(wait=True)
