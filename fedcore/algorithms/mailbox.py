"""Receive by (op, round) from one link that several threads read (every method's roles).

A ParaBlock client's computation thread waits for the next round's plan while its communication
thread waits for an aggregate; the server waits for one round's uploads while a later round's
may already arrive. ``Mailbox.get`` hands each the message it asked for and keeps the rest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from fedcore.transport import Message, PeerTimeout, TransportError

log = logging.getLogger("fedcore.algorithms")


class Mailbox:
    """Wraps a ``Link``; messages whose ``meta["op"]`` is in ``ignore``, or not in ``keep`` when
    given, are released unread, and at most ``max_kept`` (0: no cap) unclaimed messages are held
    (the oldest goes first): a peer cannot fill memory with messages nobody asks for."""

    def __init__(
        self, link: Any, *, ignore: tuple[str, ...] = (), keep: tuple[str, ...] | None = None, max_kept: int = 0
    ):
        self.link, self.ignore, self.keep, self.max_kept = link, ignore, keep, max_kept
        self._kept: list[Message] = []
        self._lock = threading.Lock()

    def get(
        self,
        match: Callable[[Message], bool],
        timeout: float | None = None,
        *,
        on_drop: Callable[[PeerTimeout], None] | None = None,
    ) -> Message:
        """The first message (kept or new) for which ``match`` is true. Raises ``PeerTimeout`` after
        ``timeout`` seconds (None: wait forever). ``on_drop`` handles a lost peer reported by the
        link (a server's lease expiry) instead of raising it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                for i, msg in enumerate(self._kept):
                    if match(msg):
                        return self._kept.pop(i)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise PeerTimeout(f"no matching message within {timeout} s")
                try:  # one reader at a time; short slices so another thread's match is seen soon
                    msg = self.link.recv(timeout=0.05 if left is None else min(0.05, left))
                except PeerTimeout as exc:
                    if getattr(exc, "peer", None) is None:
                        continue
                    if on_drop is None:
                        raise
                    on_drop(exc)
                    continue
                except TransportError as exc:  # a peer sent something malformed: it was refused
                    if on_drop is None:
                        raise
                    log.warning("ignored a refused transfer: %s", exc)
                    continue
                op = msg.meta.get("op")
                if op in self.ignore or (self.keep is not None and op not in self.keep):
                    if op not in self.ignore:
                        log.warning("ignored a message with op %r from %s", op, msg.peer)
                    msg.release()
                    continue
                if match(msg):
                    return msg
                self._kept.append(msg)
                if self.max_kept and len(self._kept) > self.max_kept:  # bounded: the oldest goes
                    old = self._kept.pop(0)
                    log.warning("dropped an unclaimed %r message from %s", old.meta.get("op"), old.peer)
                    old.release()

    def discard(self, match: Callable[[Message], bool]) -> int:
        """Release every kept message for which ``match`` is true; returns how many."""
        with self._lock:
            gone = [m for m in self._kept if match(m)]
            self._kept = [m for m in self._kept if not match(m)]
        for m in gone:
            m.release()
        return len(gone)


def op_is(op: str, rnd: int | None = None, peer: str | None = None) -> Callable[[Message], bool]:
    """A matcher for ``meta["op"] == op`` (and ``meta["round"] == rnd``, ``msg.peer == peer``)."""

    def match(msg: Message) -> bool:
        return (
            msg.meta.get("op") == op
            and (rnd is None or msg.meta.get("round") == rnd)
            and (peer is None or msg.peer == peer)
        )

    return match
