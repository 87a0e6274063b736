"""fedcore.transport: ZeroMQ tensor transport (framing, CurveZMQ security, overlap, shaping).

``Server`` (ROUTER, bind) and ``Client`` (DEALER, connect) move named tensors with a small metadata
dict; ``InProcessHub`` gives the same ``Link`` semantics inside one process.
"""

if __name__ != "fedcore.transport":
    # Reached only when the checkout itself is on sys.path (``python -m``/``-c`` run from the repo
    # root puts the cwd first).
    raise ImportError(
        "'transport' is not a top-level module: use fedcore.transport. The fedcore checkout is on "
        "sys.path; run from another directory, use the installed commands, or set PYTHONSAFEPATH=1."
    )

from .client import Client  # noqa: E402
from .errors import AuthError, PeerTimeout, ProtocolError, TransportError  # noqa: E402
from .keys import AllowList, Keypair, allow, load_keypair, revoke, save_keypair  # noqa: E402
from .link import InProcessEndpoint, InProcessHub, Link  # noqa: E402
from .messages import EndpointOptions, Message, SendHandle  # noqa: E402
from .pacer import LinkShape, TokenBucket  # noqa: E402
from .server import Server  # noqa: E402

__all__ = [
    "AllowList",
    "AuthError",
    "Client",
    "EndpointOptions",
    "InProcessEndpoint",
    "InProcessHub",
    "Keypair",
    "Link",
    "LinkShape",
    "Message",
    "PeerTimeout",
    "ProtocolError",
    "SendHandle",
    "Server",
    "TokenBucket",
    "TransportError",
    "allow",
    "load_keypair",
    "revoke",
    "save_keypair",
]
