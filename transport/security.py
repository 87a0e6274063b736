"""Which addresses may go without encryption, and the ZAP authenticator of a CURVE server."""

from __future__ import annotations

import ipaddress

import zmq
from zmq.auth.thread import ThreadAuthenticator

from .keys import AllowList


def is_local_address(address: str) -> bool:
    """True for ipc://, inproc:// and tcp:// on a loopback host (127.0.0.0/8, ::1, localhost)."""
    if address.startswith(("ipc://", "inproc://")):
        return True
    if not address.startswith("tcp://"):
        return False
    host = address[len("tcp://") :].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_secure_or_local(address: str, plaintext: bool) -> None:
    """Refuse plaintext anywhere but loopback or ipc: CURVE is the default everywhere else."""
    if plaintext and not is_local_address(address):
        raise ValueError(f"plaintext is allowed only on loopback or ipc, not {address!r}: pass keys (CURVE) instead")


def start_authenticator(ctx: zmq.Context, allowed: AllowList) -> ThreadAuthenticator:
    """A ZAP handler that admits exactly the client keys in ``allowed`` (checked at handshake;
    the server re-checks the authenticated User-Id on every message, so revocation bites)."""
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve_callback("*", credentials_provider=allowed)
    return auth
