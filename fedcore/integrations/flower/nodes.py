"""Which Flower node serves which fedcore client: the ``query.fedcore_hello`` exchange.

Flower node ids are random integers; fedcore's clients are shards 0..N-1. At the start of a run
the ServerApp waits for the nodes and asks each (``query.fedcore_hello``) for its
``partition-id``, its training-example count and the algorithm its config names. The
``NodeMap`` keeps the answer both ways. A node that does not answer, answers nonsense, or claims a
shard another node already holds is left out with a logged reason; the run needs at least one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Container
from dataclasses import dataclass, field

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from .records import METRICS, number, reply_problem, sender

log = logging.getLogger("fedcore.flower")

HELLO = "query.fedcore_hello"


@dataclass
class NodeMap:
    """``client[node_id]`` -> client index and ``node[index]`` -> node id for the nodes in the run;
    ``samples[index]``: that client's training examples; ``missing``: indices no node serves."""

    client: dict[int, int] = field(default_factory=dict)
    node: dict[int, int] = field(default_factory=dict)
    samples: dict[int, int] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)

    def indices(self) -> list[int]:
        return sorted(self.node)

    def dropped(self, clients: int, finished: Container[int]) -> dict[int, str]:
        """Client index -> why it has no final result: no node serves it, or it is not in
        ``finished`` (the clients the final evaluation heard from)."""
        out = {k: "no Flower node serves this shard" for k in self.missing}
        out |= {k: "left out of the final evaluation" for k in range(clients) if k not in out and k not in finished}
        return out


def wait_for_nodes(grid: Grid, count: int, timeout_s: float) -> list[int]:
    """The node ids once ``count`` nodes are connected, or the ones there after ``timeout_s``
    (``RuntimeError`` with none)."""
    deadline = time.monotonic() + timeout_s
    while True:
        ids = sorted(int(n) for n in grid.get_node_ids())
        if len(ids) >= count or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if not ids:
        raise RuntimeError(f"no Flower node connected within {timeout_s} s")
    if len(ids) < count:
        log.warning("fedcore: %d of %d nodes connected within %s s; going on with them", len(ids), count, timeout_s)
    return ids


def map_nodes(grid: Grid, clients: int, algorithm: str, *, timeout_s: float = 600.0) -> NodeMap:
    """Ask every node which shard it serves (see the module docstring)."""
    ids = wait_for_nodes(grid, clients, timeout_s)
    content = RecordDict({"config": ConfigRecord({"algorithm": algorithm})})
    asked = [Message(content=content, dst_node_id=n, message_type=HELLO) for n in ids]
    replies = grid.send_and_receive(asked, timeout=timeout_s)
    nodes = NodeMap()
    for reply in sorted(replies, key=sender):
        node = sender(reply)
        problem = reply_problem(reply, arrays=False, need=("partition-id", "num-examples"))
        if problem is None:
            metrics = reply.content.metric_records[METRICS]
            index, samples = int(number(metrics, "partition-id") or 0), int(number(metrics, "num-examples") or 0)
            if not 0 <= index < clients or samples < 0:
                problem = f"partition-id {index} / num-examples {samples} do not fit {clients} clients"
            elif index in nodes.node:
                problem = f"partition-id {index} is served by node {nodes.node[index]} already"
        if problem is not None:
            log.warning("fedcore: node %d left out of the run: %s", node, problem)
            continue
        nodes.client[node], nodes.node[index], nodes.samples[index] = index, node, samples
    if not nodes.node:
        raise RuntimeError("no Flower node answered fedcore's hello; see the log for why")
    nodes.missing = [k for k in range(clients) if k not in nodes.node]
    if nodes.missing:
        log.warning("fedcore: no node serves clients %s; they are out of the run", nodes.missing)
    return nodes
