"""What a fedcore ClientApp keeps between Flower messages, and the answer to the hello.

In Flower's simulation engine a ClientApp object lives as long as its backend worker, which
serves many nodes in turn; in the deployment engine a SuperNode starts a fresh process per
message. So a client's model and data are cached per process (``LocalCache``: at most
``FEDCORE_FLOWER_CACHE`` clients, default 4), keyed by the config and the shard, and everything a
method must carry from one message to the next is either in the server's message (a batch stream
position, a version) or in ``context.state`` (Flower keeps that per node and run).
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from fedcore.algorithms import algorithm_of

from .config import config_from_run_config, partition_of
from .records import METRICS


def config_key(config: Any) -> str:
    """A config as a stable string (cache key)."""
    return json.dumps(algorithm_of(config).config_to_dict(config), sort_keys=True, default=str)


class LocalCache:
    """Built clients by (config, shard), least recently used out first."""

    def __init__(self, size: int | None = None):
        self.size = size or max(1, int(os.environ.get("FEDCORE_FLOWER_CACHE", "4")))
        self.items: OrderedDict[tuple[str, int, str], Any] = OrderedDict()

    def get(self, config: Any, index: int, build: Callable[[Any, int], Any]) -> Any:
        key = (config_key(config), index, build.__qualname__)
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        while len(self.items) >= self.size:
            self.items.popitem(last=False)
        self.items[key] = value = build(config, index)
        return value


_BUILT = LocalCache()


def built(config: Any, index: int, build: Callable[[Any, int], Any]) -> Any:
    """Client ``index`` of ``config`` as ``build`` makes it, from this process's cache. A module
    function on purpose: Ray pickles a ClientApp's handlers by value, with copies of the globals they
    name, but a module's own functions by reference, so this cache is the worker's, across messages."""
    return _BUILT.get(config, index, build)


def node_client(context: Context, config: Any | None) -> tuple[Any, int]:
    """(the fedcore config, this node's client index): ``config`` or the run's ``run_config``."""
    config = config if config is not None else config_from_run_config(context.run_config)
    return config, partition_of(context.node_config, config.num_clients)


def hello_reply(msg: Message, index: int, samples: int) -> Message:
    """This node's answer to ``query.fedcore_hello``."""
    return Message(RecordDict({METRICS: MetricRecord({"partition-id": index, "num-examples": samples})}), reply_to=msg)


def saved(context: Context, key: str) -> ConfigRecord:
    """``context.state``'s ConfigRecord ``key`` (created empty)."""
    if key not in context.state.config_records:
        context.state.config_records[key] = ConfigRecord()
    return context.state.config_records[key]
