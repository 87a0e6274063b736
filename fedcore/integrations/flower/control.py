"""Flower as the control plane, fedcore's transport as the data plane: any registered method.

Split learning exchanges four messages per step and ParaBlock overlaps its uploads with the next
round's compute; neither fits a ClientApp that ends when it replies (a SuperNode starts a fresh
process per message: seconds per message round trip, and a split step needs two; see
``bench/bench_flower.py``).
So Flower finds the nodes and hands out keys, and the run itself goes over fedcore's CURVE link:

1. ``query.fedcore_hello``: each node names its shard (``nodes.map_nodes``).
2. ``query.fedcore_keys``: each node makes a fresh CurveZMQ keypair, keeps the secret in its
   ``context.state`` and returns the public key. The ServerApp starts a ``fedcore.transport.Server``
   (CURVE, a fresh server keypair) whose allow-list is exactly those keys.
3. ``query.fedcore_run``: one long-lived message per node with the server's address and public
   key. The node connects, runs the method's client role for the whole run and replies with its
   exit status. Meanwhile the ServerApp runs the method's server role over the link, as
   ``fedcore serve`` does, then writes fedcore's outputs (``outputs.finish_run``).

Every node must reach the ServerApp's host at ``flower.bind``'s port (run_config ``flower.bind``,
default ``transport.bind``; ``flower.address``: the address nodes dial, default the bound one).
A node that does not connect within ``flower.join-timeout`` seconds (default 600) is out of the
run from its start, as a dropped client; the run needs at least one.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedcore.algorithms import algorithm_of
from fedcore.runtime.export import client_shards
from fedcore.transport import Client, Keypair, PeerTimeout, Server, TransportError

from .config import config_from_run_config
from .local import hello_reply, node_client, saved
from .nodes import NodeMap, map_nodes
from .outputs import Outcome, finish_run
from .records import CONFIG, METRICS, as_int, reply_problem, sender

log = logging.getLogger("fedcore.flower")

KEYS, RUN = "query.fedcore_keys", "query.fedcore_run"
EXIT_OK, EXIT_SERVER_LOST = 0, 3


def control_server_app(config: Any | None = None, *, on_outcome: Outcome | None = None) -> ServerApp:
    """A ServerApp that runs ``config``'s method (default: the run's ``run_config``) with Flower as
    the control plane (see the module docstring)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = config if config is not None else config_from_run_config(context.run_config)
        run_control(grid, cfg, dict(context.run_config), on_outcome=on_outcome)

    return app


def run_control(grid: Grid, config: Any, run_config: dict[str, Any], *, on_outcome: Outcome | None = None) -> Any:
    """The ServerApp's side of a control-plane run; returns fedcore's ``RunOutcome``."""
    from fedcore.runtime.processes import absent_peers, await_hellos, transport_options
    from fedcore.runtime.runner import server_role
    from fedcore.runtime.serve import leave_out

    spec, t = algorithm_of(config), config.transport
    timeout = float(run_config.get("flower.join-timeout", 600.0))
    t0 = time.perf_counter()
    nodes = map_nodes(grid, config.num_clients, spec.name, timeout_s=timeout)
    publics = exchange_keys(grid, nodes, timeout)
    keys = Keypair.generate()
    bind = str(run_config.get("flower.bind", t.bind))
    server = Server(bind, keys=keys, allow=list(publics.values()), options=transport_options(t))
    try:
        address = str(run_config.get("flower.address") or server.address)
        log.info("fedcore: %s over CURVE at %s for %d nodes", spec.name, address, len(publics))
        orders = [
            Message(
                content=RecordDict(
                    {CONFIG: ConfigRecord({"address": address, "server-key": keys.public.decode(), "client": k})}
                ),
                dst_node_id=nodes.node[k],
                message_type=RUN,
            )
            for k in sorted(publics)
        ]
        ids = list(grid.push_messages(orders))
        peers = await_hellos(server, config.num_clients, timeout=timeout, min_clients=1)
        role = server_role(spec, config, server, peers, None)
        leave_out(role, absent_peers(peers), spec.name)
        result = role.run()
        server.flush(timeout=min(5.0, t.lease_s))
        collect_exits(grid, ids, nodes, timeout=60.0)
        wire = server.stats()
    finally:
        server.close()
    return finish_run(
        config, result, wire, transport="flower+zmq+curve", t0=t0, run_config=run_config, on_outcome=on_outcome
    )


def exchange_keys(grid: Grid, nodes: NodeMap, timeout: float) -> dict[int, bytes]:
    """Client index -> the public key its node made for this run (nodes that fail are left out)."""
    asked = [Message(content=RecordDict(), dst_node_id=nodes.node[k], message_type=KEYS) for k in nodes.indices()]
    publics: dict[int, bytes] = {}
    for reply in grid.send_and_receive(asked, timeout=timeout):
        k = nodes.client.get(sender(reply))
        problem = "error reply" if reply.has_error() else None
        key = None if problem else reply.content.config_records.get(CONFIG, ConfigRecord()).get("public")
        if k is None or not isinstance(key, str) or len(key) != 40:
            log.warning("fedcore: node %d left out: no CURVE public key (%s)", sender(reply), problem or repr(key))
            continue
        publics[k] = key.encode()
    if not publics:
        raise RuntimeError("no Flower node returned a CURVE public key")
    return publics


def collect_exits(grid: Grid, ids: list[str], nodes: NodeMap, *, timeout: float) -> None:
    """Wait (up to ``timeout`` s) for the nodes' replies to their run message; log each outcome."""
    deadline, pending = time.monotonic() + timeout, set(ids)
    while pending and time.monotonic() < deadline:
        for reply in grid.pull_messages(list(pending)):
            pending.discard(reply.metadata.reply_to_message_id)
            k = nodes.client.get(sender(reply))
            problem = reply_problem(reply, arrays=False, need=("exit",))
            if problem is not None:
                log.warning("fedcore: client %s's node: %s", k, problem)
            else:
                log.info(
                    "fedcore: client %s's node finished (exit %d)",
                    k,
                    as_int(reply.content.metric_records[METRICS]["exit"], "exit"),
                )
        if pending:
            time.sleep(0.2)
    if pending:
        log.warning("fedcore: %d nodes had not replied %s s after the run ended", len(pending), timeout)


def control_client_app(config: Any | None = None) -> ClientApp:
    """The ClientApp of the control-plane mode for ``config`` (default: the run's ``run_config``)."""
    app = ClientApp()

    @app.query("fedcore_hello")
    def hello(msg: Message, context: Context) -> Message:
        cfg, k = node_client(context, config)
        shard = client_shards(algorithm_of(cfg), cfg)[k]
        return hello_reply(msg, k, len(shard.train) or shard.stats.kept)

    @app.query("fedcore_keys")
    def keys(msg: Message, context: Context) -> Message:
        pair = Keypair.generate()
        assert pair.secret is not None
        mine = saved(context, "fedcore.keys")
        mine["public"], mine["secret"] = pair.public.decode(), pair.secret.decode()
        return Message(RecordDict({CONFIG: ConfigRecord({"public": pair.public.decode()})}), reply_to=msg)

    @app.query("fedcore_run")
    def run(msg: Message, context: Context) -> Message:
        cfg, k = node_client(context, config)
        order = msg.content.config_records[CONFIG]
        code, seconds = run_client_role(cfg, k, order, saved(context, "fedcore.keys"))
        return Message(RecordDict({METRICS: MetricRecord({"exit": code, "seconds": seconds})}), reply_to=msg)

    return app


def run_client_role(config: Any, index: int, order: ConfigRecord, mine: ConfigRecord) -> tuple[int, float]:
    """Connect with this node's keypair to the address in ``order``, run client ``index``'s role
    until the server says stop; returns (exit code, seconds)."""
    from fedcore.runtime.processes import transport_options

    t0 = time.perf_counter()
    public, secret = mine.get("public"), mine.get("secret")
    if not isinstance(public, str) or not isinstance(secret, str):
        raise ValueError("no keypair of this run on this node: query.fedcore_keys must come first")
    spec = algorithm_of(config)
    link = Client(
        str(order["address"]),
        keys=Keypair(public.encode(), secret.encode()),
        server_key=str(order["server-key"]).encode(),
        options=transport_options(config.transport),
    )
    try:
        role = spec.client(config, link, index)
        link.send({}, {"op": "hello", "client": index}, tag="control")
        role.run()
        code = EXIT_OK
    except (PeerTimeout, TransportError) as exc:
        log.error("fedcore: client %d lost the server at %s: %s", index, order["address"], exc)
        code = EXIT_SERVER_LOST
    finally:
        link.close()
    return code, time.perf_counter() - t0


__all__ = ["control_client_app", "control_server_app", "run_control"]
