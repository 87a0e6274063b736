"""Typed transport failures: what went wrong on the wire, said so the caller can act on it."""

from __future__ import annotations


class TransportError(Exception):
    """Base of every fedcore.transport failure."""


class ProtocolError(TransportError):
    """A message broke the wire format (bad header, size, dtype, sequence...).

    ``peer`` is the offending peer's id when known.
    """

    def __init__(self, message: str, *, peer: str | None = None):
        super().__init__(message)
        self.peer = peer


class AuthError(TransportError):
    """A peer's key is unknown or revoked, or a message's authenticated key does not match."""

    def __init__(self, message: str, *, peer: str | None = None):
        super().__init__(message)
        self.peer = peer


class PeerTimeout(TransportError):
    """A peer was silent for longer than its lease (or a send/recv/ack waited past its timeout)."""

    def __init__(self, message: str, *, peer: str | None = None):
        super().__init__(message)
        self.peer = peer
