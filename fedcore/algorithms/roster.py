"""Who is still in a run: one roster of active, dropped and rejoined clients for every method's
server, and the one error a run ends with when nobody is left."""

from __future__ import annotations

import logging

from fedcore.transport import ProtocolError

log = logging.getLogger("fedcore.algorithms")


class AllClientsLost(RuntimeError):
    """Every client of the run has dropped out (``dropped``: peer id -> why)."""

    def __init__(self, dropped: dict[str, str]):
        reasons = "; ".join(f"{peer}: {why}" for peer, why in dropped.items())
        super().__init__(f"every client has dropped out ({reasons})")
        self.dropped = dict(dropped)


class ProtocolViolation(ProtocolError):
    """A client's message broke its method's protocol (wrong op, malformed counts or tensors): the
    client is dropped and the run goes on. ``peer`` names it when known."""


class Roster:
    """The clients of a run, in client order (``peers[i]`` is client i's peer id on the link).

    ``active``: peer ids still in the run, in client order; ``dropped``: peer id -> why it left;
    ``rejoined``: peer id -> the round at which a dropped client came back."""

    def __init__(self, peers: list[str], *, name: str = "run"):
        if len(set(peers)) != len(peers):
            raise ValueError(f"peer ids must be distinct, got {peers}")
        self.peers = list(peers)
        self.active = list(peers)
        self.dropped: dict[str, str] = {}
        self.rejoined: dict[str, int] = {}
        self.name = name

    def __contains__(self, peer: object) -> bool:
        """True while ``peer`` is in the run."""
        return peer in self.active

    def index(self, peer: str) -> int:
        """Client index of ``peer``."""
        return self.peers.index(peer)

    def active_indices(self) -> list[int]:
        return [self.peers.index(p) for p in self.active]

    def dropped_by_index(self) -> dict[int, str]:
        return {self.peers.index(p): why for p, why in self.dropped.items()}

    def drop(self, peer: str, why: str) -> bool:
        """Take ``peer`` out of the run; False if it was not in it. Raises ``AllClientsLost``
        when it was the last one."""
        if peer not in self.active:
            return False
        self.active.remove(peer)
        self.dropped[peer] = why
        log.warning("%s: client %s dropped (%s); %d go on", self.name, peer, why, len(self.active))
        if not self.active:
            raise AllClientsLost(self.dropped)
        return True

    def rejoin(self, peer: str, rnd: int) -> None:
        """``peer``, dropped earlier, is back in the run from round ``rnd`` (client order kept)."""
        if peer not in self.dropped:
            raise ValueError(f"{peer} was not dropped")
        del self.dropped[peer]
        self.active[:] = [p for p in self.peers if p in self.active or p == peer]
        self.rejoined[peer] = rnd
