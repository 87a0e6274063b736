"""Split learning as a registered algorithm (``algorithm = "split"``, the default of ``fedcore run``):
the server role of ``split.mode`` and one client role per process, both built from the config."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from fedcore.accounting import merge_counts
from fedcore.lora import load_lora_state, lora_state
from fedcore.model import split_model

from ..builders import describe_model, tokenizer_of
from ..registry import (
    AlgorithmSpec,
    Checkpoint,
    Progress,
    ProgressEvent,
    ReportTable,
    RunReport,
    TrainedModel,
    register_algorithm,
)
from .client_role import SplitClientRole
from .config import SplitRunConfig
from .modes import make_server_role
from .resume import split_checkpoint, split_resume
from .server_role import SplitServerResult, StepReport
from .setup import (
    add_lora,
    build_client_data,
    build_split,
    client_clip,
    client_parts,
    endless_batches,
    h_a_noise,
    secret_noise,
    wire_codecs,
)

DIRECTIONS = (
    ("h_A", "client -> server"),
    ("h_B", "server -> client"),
    ("dh_B", "client -> server"),
    ("dh_A", "server -> client"),
    ("eval_h_A", "client -> server"),
    ("eval_h_B", "server -> client"),
    ("lora_up", "client -> server"),
    ("lora_down", "server -> client"),
    ("control", "both ways"),
    ("ack", "both ways"),
)


@dataclass
class SplitRunResult:
    """What a run measured: eval losses, per-step reports, bytes per message tag, timings.
    ``extra``: skills per client, ``dropped`` (client index -> why), ``rejoined`` (index -> round)."""

    eval_start: list[float]
    eval_end: list[float]
    steps: list[StepReport]
    wire_bytes: dict[str, int]
    wire_messages: dict[str, int]
    wall_seconds: float
    client_sizes: list[int]
    extra: dict[str, Any] = field(default_factory=dict)
    # the LoRA at the end: ``body.<name>`` (the server's body) and ``head.<name>`` / ``tail.<name>``
    # (the last average, which every client in the run holds)
    final_lora: dict[str, Any] = field(default_factory=dict)

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


class SplitServer:
    """The server role of ``config.split.mode`` over ``link`` for ``peers``, run to the end."""

    def __init__(self, config: SplitRunConfig, link: Any, peers: list[str], on_progress: Progress | None = None):
        self.t0 = time.perf_counter()
        self.config, self.link, self.peers = config, link, peers
        tokenizer = tokenizer_of(config.model)
        self.data = build_client_data(config, tokenizer)
        rounds = config.train.rounds

        def on_step(rec: StepReport) -> None:  # called by the server as each step completes
            if on_progress is not None:
                on_progress(ProgressEvent(1, rec.loss, f"round {rec.round + 1}/{rounds} client {rec.client}", rec))

        sizes: list[float] = [len(d.train) for d in self.data]  # FedAvg weights: samples per client
        self.role = make_server_role(config, link, build_split(config, tokenizer), peers, sizes, on_step=on_step)
        if on_progress is not None:

            def on_round(rnd: int, result: SplitServerResult) -> None:  # a checkpoint after every round
                def ckpt() -> Checkpoint:  # asks the clients for their state: only when kept
                    wall = time.perf_counter() - self.t0
                    return split_checkpoint(self.role, rnd + 1, result, wall, mode=config.split.mode)

                loss = result.reports[-1].loss if result.reports else float("nan")
                on_progress(ProgressEvent(0, loss, f"round {rnd + 1}/{rounds}", None, ckpt))

            self.role.on_round = on_round

    @property
    def roster(self) -> Any:
        """The clients still in the run (the server role's ``Roster``)."""
        return self.role.roster

    def restore(self, ckpt: Checkpoint) -> None:
        """Go on from a checkpoint of this run's mode (before ``run()``); ``ValueError`` when the
        checkpoint does not fit this config."""
        wall = split_resume(self.role, ckpt, mode=self.config.split.mode, rounds=self.config.train.rounds)
        self.t0 = time.perf_counter() - wall

    def run(self) -> SplitRunResult:
        tc = self.config.train
        result = self.role.run(rounds=tc.rounds, local_steps=tc.local_steps, avg_period=self.config.split.avg_period)
        stats = self.link.stats()
        return SplitRunResult(
            eval_start=result.eval_start,
            eval_end=result.eval_end,
            steps=result.reports,
            wire_bytes=merge_counts(stats["received"], stats["sent"]),
            wire_messages=merge_counts(stats["received_messages"], stats["sent_messages"]),
            wall_seconds=time.perf_counter() - self.t0,
            client_sizes=[len(d.train) for d in self.data],
            final_lora={
                **{f"body.{n}": t.to("cpu") for n, t in lora_state(self.role.parts.body).items()},
                **{n: t.detach().to("cpu", copy=True) for n, t in self.role.last_average.items()},
            },
            extra={
                "skills": [d.skills for d in self.data],
                "dropped": {self.peers.index(p): why for p, why in self.role.dropped.items()},
                "rejoined": {self.peers.index(p): rnd for p, rnd in self.role.rejoined.items()},
                "train_seconds": result.train_seconds,
            },
        )


def split_client(config: SplitRunConfig, link: Any, index: int) -> SplitClientRole:
    """Client ``index``'s role: its data shard, its head and tail with LoRA, its codecs."""
    tokenizer = tokenizer_of(config.model)
    data = build_client_data(config, tokenizer)[index]
    codecs, noise_std = wire_codecs(config, index)
    return SplitClientRole(
        link,
        client_parts(config, build_split(config, tokenizer), index),
        endless_batches(data, config, index, tokenizer.pad_id),
        data.eval_batches,
        noise_std=noise_std,
        noise_relative=h_a_noise(config)[1],
        codecs=codecs,
        micro_batches=config.split.micro_batches,
        clip=client_clip(config),
        clip_unit=config.privacy.unit,
        secret_noise=secret_noise(config),
    )


def describe(config: SplitRunConfig) -> str:
    m, s, tc, c, pc = config.model, config.split, config.train, config.codecs, config.privacy
    if pc.enabled:
        noise = f"Gaussian mechanism on h_A (clip {pc.clip} per {pc.unit}, sigma {pc.noise_multiplier} x clip)"
    else:
        noise = f"noise std {config.noise.std}{' x mean|h_A|' if config.noise.relative else ''}"
    return (
        f"split fine-tuning: {describe_model(m)}, head {s.blocks_a} / tail {s.blocks_c} layers on each client, "
        f"the body on the server, {tc.clients} clients, mode {s.mode}, {noise}, codecs "
        f"h_A {c.h_A} / h_B {c.h_B} / dh_B {c.dh_B} / dh_A {c.dh_A}"
    )


def report(config: SplitRunConfig, result: SplitRunResult, wire: dict[str, Any]) -> RunReport:
    """Per client: held-out loss at start and end (``losses``: the end ones), tokens/s; bytes per
    tensor kind and direction."""
    rows = [
        [
            str(k),
            str(result.client_sizes[k]),
            f"{start:.3f}",
            f"{end:.3f}",
            f"{(end - start) / start:+.0%}",
            f"{result.tokens_per_second(k):,.0f}",
        ]
        for k, (start, end) in enumerate(zip(result.eval_start, result.eval_end, strict=True))
    ]
    wire_rows = [
        [kind, direction, f"{result.wire_bytes.get(kind, 0) / 2**20:,.2f}", str(result.wire_messages.get(kind, 0))]
        for kind, direction in DIRECTIONS
    ]
    privacy_rows, leak, dp = privacy_checks(config, result)
    records: list[tuple[str, dict[str, Any]]] = [("step", asdict(rec)) for rec in result.steps]
    if leak is not None:
        records.append(("leakage", leak))
    if dp is not None:
        records.append(("privacy", dp))
    for k, (start, end) in enumerate(zip(result.eval_start, result.eval_end, strict=True)):
        records += [
            ("eval", {"client": k, "when": "start", "loss": start}),
            ("eval", {"client": k, "when": "end", "loss": end}),
        ]
    privacy_tables = [ReportTable("what the server can read from h_A", ["check", "result"], privacy_rows)]
    return RunReport(
        losses=list(result.eval_end),
        tables=[
            ReportTable(
                "split fine-tuning summary (eval loss on each client's held-out data)",
                ["client", "examples", "loss start", "loss end", "change", "tokens/s"],
                rows,
            ),
            ReportTable(
                "bytes across the split (counted at the server)", ["tensor", "direction", "MiB", "messages"], wire_rows
            ),
            *(privacy_tables if privacy_rows else []),
        ],
        records=records,
        curve=[(float(i), rec.loss) for i, rec in enumerate(result.steps)],
        x_label="client step (in order of completion)",
        summary={
            "eval_loss_start": result.eval_start,
            "eval_loss_end": result.eval_end,
            "tokens": result.tokens,
            "train_seconds": result.train_seconds,
            "tokens_per_second": result.tokens_per_second(),
            "wire_bytes": result.wire_bytes,
            "wire_messages": result.wire_messages,
            "wall_seconds": result.wall_seconds,
            "client_train_examples": result.client_sizes,
            "dropped": {str(k): v for k, v in result.extra.get("dropped", {}).items()},
            "rejoined": {str(k): v for k, v in result.extra.get("rejoined", {}).items()},
            "leakage": leak,
            "privacy": dp,
        },
        trained=trained_model(config, result),
    )


def run_guarantee(config: SplitRunConfig, result: SplitRunResult) -> dict[str, Any]:
    """(epsilon, delta) of the run's h_A releases: the most times one training example's h_A left
    its client (epochs over its shard) or one held-out example's (once per evaluation)."""
    from fedcore.privacy import guarantee

    pc = config.privacy
    evaluations = int(bool(result.eval_start)) + int(bool(result.eval_end))
    releases = run_releases(config, result.client_sizes, evaluations)
    return guarantee(pc.clip, pc.noise_multiplier, releases, pc.delta, pc.unit, config.split.blocks_a).record()


def run_releases(config: SplitRunConfig, client_sizes: list[int], evaluations: int) -> int:
    """The most times one example's h_A leaves its client in a run: a training example once per
    epoch over its shard (``train.rounds * train.local_steps`` batches), a held-out one once per
    evaluation."""
    from fedcore.privacy import epoch_releases

    tc = config.train
    steps = tc.rounds * tc.local_steps
    train = max((epoch_releases(steps, n, tc.batch_size) for n in client_sizes), default=0)
    return max(train, evaluations, 1)


def privacy_checks(
    config: SplitRunConfig, result: SplitRunResult
) -> tuple[list[list[str]], dict[str, Any] | None, dict[str, Any] | None]:
    """The summary rows, the leakage check (``privacy.leakage_check``; needs the final LoRA) and
    the formal guarantee (``privacy.clip`` > 0) of a finished run."""
    rows: list[list[str]] = []
    leak = dp = None
    if config.privacy.leakage_check and result.final_lora:
        from fedcore.algorithms.split.leakage import split_leakage

        leak = split_leakage(config, result.final_lora)
        victims = "its own" if leak["victims"] == [0] else "the other clients'"
        rows.append(
            [
                f"leakage: {leak['attack']} inverter fitted on {leak['shadow_tokens']} of client 0's h_A rows",
                f"reads {leak['token_recovery']:.1f}% of {victims} {leak['victim_tokens']} held-out tokens",
            ]
        )
    if config.privacy.enabled:
        dp = run_guarantee(config, result)
        rows.append(
            [
                f"Gaussian mechanism per {dp['unit']} (clip {dp['clip']:g}, z {dp['multiplier']:g})",
                f"({dp['epsilon']:.3g}, {dp['delta']:g})-DP over {dp['releases']} releases of each {dp['unit']}",
            ]
        )
    elif leak is not None:
        rows.append(["formal guarantee", "none ([noise] is heuristic; [privacy] clip > 0 gives (epsilon, delta)-DP)"])
    return rows, leak, dp


def check_model(config: SplitRunConfig, model: Any) -> None:
    """The checkpoint splits as the config asks (``ValueError`` naming the layer counts if not)."""
    split_model(model, config.split.blocks_a, config.split.blocks_c)


def trained_model(config: SplitRunConfig, result: SplitRunResult) -> TrainedModel | None:
    """The body's LoRA with the last head/tail average: the whole model every client in the run
    ends with (one adapter over all layers)."""
    if not result.final_lora:
        return None
    state = result.final_lora

    def apply(model: Any, client: int) -> None:
        sm = split_model(model, config.split.blocks_a, config.split.blocks_c)  # the parts share its modules
        for name, part in (("head", sm.head), ("body", sm.body), ("tail", sm.tail)):
            if len(part.layers):
                add_lora(config)(part.layers)
                load_lora_state(part, {n[len(name) + 1 :]: t for n, t in state.items() if n.startswith(name + ".")})

    dropped = result.extra.get("dropped", {})
    kept = [k for k in range(config.train.clients) if k not in dropped]
    return TrainedModel("lora", apply, shared=True, clients=kept)


SPEC = register_algorithm(
    AlgorithmSpec(
        name="split",
        config_class=SplitRunConfig,
        server=SplitServer,
        client=split_client,
        report=report,
        total=lambda c: c.train.rounds * c.train.clients * c.train.local_steps,
        describe=describe,
        resumable=True,  # sequential mode; the others refuse with one line
        check_model=check_model,
    )
)
