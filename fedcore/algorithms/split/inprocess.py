"""Run the split roles in one process: the server and each client on its own thread, talking
through ``InProcessHub`` (same messages, same byte accounting as over sockets)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fedcore.accounting import merge_counts
from fedcore.data import CharTokenizer
from fedcore.runtime.config import RunConfig
from fedcore.transport import InProcessHub

from .client_role import SplitClientRole
from .modes import make_server_role
from .server_role import StepReport
from .setup import build_client_data, build_split, client_parts, endless_batches, wire_codecs


@dataclass
class SplitRunResult:
    """What a run measured: eval losses, per-step reports, bytes per message tag, timings."""

    eval_start: list[float]
    eval_end: list[float]
    steps: list[StepReport]
    wire_bytes: dict[str, int]
    wire_messages: dict[str, int]
    wall_seconds: float
    client_sizes: list[int]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.steps)

    @property
    def train_seconds(self) -> float:
        return sum(s.seconds for s in self.steps)

    def tokens_per_second(self, client: int | None = None) -> float:
        recs = [s for s in self.steps if client is None or s.client == client]
        secs = sum(s.seconds for s in recs)
        return sum(s.tokens for s in recs) / secs if secs > 0 else 0.0


def run_split_inprocess(config: RunConfig, *, on_step: Callable[[StepReport], None] | None = None) -> SplitRunResult:
    """Run ``config`` end to end in this process (threads) and return what it measured."""
    t0 = time.perf_counter()
    tokenizer = CharTokenizer()
    data = build_client_data(config, tokenizer)
    sm = build_split(config, tokenizer)
    hub = InProcessHub()
    server_link = hub.server()
    names = [f"client-{k}" for k in range(config.train.clients)]
    roles = []
    for k, name in enumerate(names):
        link = hub.endpoint(name)
        codecs, noise_std = wire_codecs(config, k)
        roles.append(
            SplitClientRole(
                link,
                client_parts(config, sm, k),
                endless_batches(data[k], config, k, tokenizer.pad_id),
                data[k].eval_batches,
                noise_std=noise_std,
                noise_relative=config.noise.relative,
                codecs=codecs,
                micro_batches=config.split.micro_batches,
            )
        )
    errors: list[BaseException] = []

    def guarded(role: SplitClientRole) -> None:
        try:
            role.run()
        except BaseException as err:  # surfaced below: a client thread must not fail silently
            errors.append(err)

    threads = [threading.Thread(target=guarded, args=(r,), daemon=True) for r in roles]
    for t in threads:
        t.start()
    server = make_server_role(config, server_link, sm, names, [len(d.train) for d in data], on_step=on_step)
    try:
        result = server.run(
            rounds=config.train.rounds, local_steps=config.train.local_steps, avg_period=config.split.avg_period
        )
    finally:
        for t in threads:
            t.join(timeout=30)
    if errors:
        raise errors[0]
    stats = server_link.stats()
    return SplitRunResult(
        eval_start=result.eval_start,
        eval_end=result.eval_end,
        steps=result.reports,
        wire_bytes=merge_counts(stats["received"], stats["sent"]),
        wire_messages=merge_counts(dict(server_link.meter_in.messages), dict(server_link.meter_out.messages)),
        wall_seconds=time.perf_counter() - t0,
        client_sizes=[len(d.train) for d in data],
        extra={"skills": [d.skills for d in data], "transport": "inprocess", "train_seconds": result.train_seconds},
    )
