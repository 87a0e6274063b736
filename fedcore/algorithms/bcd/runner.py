"""Build a BCD run's parts from its config (identically in every process) and run it in-process.

``run_bcd`` runs the server in this thread and each client in its own thread over an
``InProcessHub``; ``bcd_server`` / ``bcd_client`` are the roles the registry hands the runtime's
thread and process runners. All run the same roles.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from fedcore.lora import inject_lora
from fedcore.model import blocks as model_layers

from ..builders import ClientData, base_model, client_datasets, shuffled_epochs, tokenizer_of
from ..registry import Checkpoint, Progress, ProgressEvent
from ..threads import serve_in_threads
from .client import BlockClient
from .config import BCDConfig
from .cyclic import CyclicClient, FedCyBGDServer
from .local import LocalBlockTraining, ParamDict, snapshot
from .server import BCDServer, ParaBlockServer, RoundRecord
from .timeline import Timeline

SERVERS: dict[str, type[BCDServer]] = {"fedbcd": BCDServer, "parablock": ParaBlockServer, "fedcybgd": FedCyBGDServer}


@dataclass
class BCDResult:
    """A finished run. ``eval_loss[i]``: client i's held-out loss under the final global model
    (NaN if it dropped out); ``wire``: the server link's byte counts per tag and direction."""

    method: str
    records: list[RoundRecord]
    eval_loss: list[float]
    wire: dict[str, dict[str, int]]
    timeline: list[dict[str, Any]]
    wall_seconds: float
    dropped: dict[int, str] = field(default_factory=dict)
    final_params: ParamDict = field(default_factory=dict)

    @classmethod
    def of(cls, server: BCDServer, records: list[RoundRecord], losses: list[float], wire: dict, t0: float) -> BCDResult:
        """The result of a finished ``server`` (its timeline, dropouts and global parameters)."""
        return cls(
            method=server.config.method,
            records=records,
            eval_loss=losses,
            wire=wire,
            timeline=server.timeline.to_records(),
            wall_seconds=time.perf_counter() - t0,
            dropped=dict(server.dropped),
            final_params=server.params,
        )

    @property
    def final_loss(self) -> float:
        """Mean held-out loss over the clients still in the run."""
        xs = [x for x in self.eval_loss if x == x]
        return sum(xs) / len(xs) if xs else float("nan")

    @property
    def download_bytes(self) -> int:
        return sum(r.down_bytes for r in self.records)

    @property
    def upload_bytes(self) -> int:
        return sum(r.up_bytes for r in self.records)


def client_data(config: BCDConfig) -> list[ClientData]:
    return client_datasets(config.data, config.clients, config.batch_size, tokenizer_of(config.model))


def build_model(config: BCDConfig) -> torch.nn.Module:
    """The frozen base model, with LoRA in every layer in ``lora`` mode (seeded: every process
    builds the same weights and factors)."""
    model = base_model(config.model, tokenizer_of(config.model).vocab_size).to(getattr(torch, config.dtype))
    if config.mode == "lora":
        torch.manual_seed(config.seed + 1)
        inject_lora(list(model_layers(model)), r=config.lora_r, alpha=config.lora_alpha)
    return model


def build_trainer(config: BCDConfig, index: int, data: ClientData) -> LocalBlockTraining:
    """Client ``index``'s local model and data."""
    batches = shuffled_epochs(data, config.batch_size, config.seed + 7919 * index, tokenizer_of(config.model).pad_id)
    return LocalBlockTraining(
        build_model(config).to(config.device),
        batches,
        mode=config.mode,
        layers_per_block=config.layers_per_block,
        steps=config.local_steps,
        lr=config.lr,
        eval_batches=data.eval_batches,
        num_samples=len(data.train),
    )


def global_model(config: BCDConfig) -> tuple[ParamDict, list[list[str]]]:
    """The server's copy of the block parameters (detached) and the names of each block."""
    model = build_model(config)
    blocks = LocalBlockTraining(model, iter(()), mode=config.mode, layers_per_block=config.layers_per_block).blocks
    live = dict(model.named_parameters())
    return snapshot(live, [n for names in blocks for n in names]), blocks


def make_client(config: BCDConfig, link: Any, trainer: LocalBlockTraining, index: int, **kwargs: Any) -> Any:
    """The method's client role (``on_round`` only applies to FedBCD / ParaBlock)."""
    if config.method == "fedcybgd":
        kwargs.pop("on_round", None)
        return CyclicClient(link, trainer, index=index, **kwargs)
    return BlockClient(
        link,
        trainer,
        index=index,
        eta=config.eta,
        staleness=config.staleness if config.method == "parablock" else 0,
        scores=config.schedule == "gradient",
        **kwargs,
    )


def conclude(server: BCDServer) -> list[float]:
    """After the rounds: bring FedCyBGD clients to the global model, evaluate, stop the clients."""
    if isinstance(server, FedCyBGDServer):
        server.refresh()
    losses = server.evaluate()
    server.finish()
    return losses


def run_bcd(
    config: BCDConfig,
    *,
    on_round: Callable[[Any, int], None] | None = None,
    history: dict[int, ParamDict] | None = None,
    clients: list[Any] | None = None,
    client_factory: Callable[..., Any] | None = None,
    on_record: Callable[[RoundRecord], None] | None = None,
) -> BCDResult:
    """Run ``config`` in this process (threads; client processes: ``fedcore.runtime.run_processes``)
    on the tiny model and the generated task, with the hooks of ``run_inprocess``."""
    data = client_data(config)
    params, blocks = global_model(config)
    trainers = [build_trainer(config, i, data[i]) for i in range(config.clients)]
    return run_inprocess(
        config,
        trainers,
        params,
        blocks,
        on_round=on_round,
        history=history,
        clients=clients,
        client_factory=client_factory,
        on_record=on_record,
    )


def run_inprocess(
    config: BCDConfig,
    trainers: list[Any],
    params: ParamDict,
    blocks: list[list[str]],
    *,
    on_round: Callable[[Any, int], None] | None = None,
    history: dict[int, ParamDict] | None = None,
    clients: list[Any] | None = None,
    client_factory: Callable[..., Any] | None = None,
    on_record: Callable[[RoundRecord], None] | None = None,
) -> BCDResult:
    """The server in this thread, client i (``trainers[i]``: any ``BlockTrainer``) in its own
    thread (``serve_in_threads``). ``params``: the global block parameters (updated in place).

    ``on_round(client, t)`` runs in each FedBCD / ParaBlock client after each round; ``history``
    receives the global parameters after every aggregate; ``clients`` (if a list) receives the
    client roles; ``client_factory(config, link, trainer, index, **kw)`` replaces ``make_client``
    (tests inject faults with it). A client thread that fails is dropped (``result.dropped``)."""
    factory = client_factory or make_client
    roles: list[Any] = []

    def client_of(i: int, trainer: Any) -> Callable[[Any], Any]:
        def build(link: Any) -> Any:
            role = factory(config, link, trainer, i, timeline=Timeline(), on_round=on_round)
            roles.append(role)
            return role

        return build

    def server_of(link: Any, peers: list[str]) -> BCDServerRun:
        samples = [t.num_samples for t in trainers]
        return BCDServerRun(config, link, peers, params, blocks, samples, history=history, on_record=on_record)

    result, _, _ = serve_in_threads(server_of, [client_of(i, t) for i, t in enumerate(trainers)])
    if clients is not None:
        clients.extend(roles)
    return result


class BCDServerRun:
    """The method's server over ``link``, run to the end: rounds, the final refresh (FedCyBGD),
    evaluation, stop; ``run()`` returns the ``BCDResult``."""

    def __init__(
        self,
        config: BCDConfig,
        link: Any,
        peers: list[str],
        params: ParamDict,
        blocks: list[list[str]],
        samples: list[int],
        **hooks: Any,
    ):
        self.t0 = time.perf_counter()
        self.link = link
        self.server = SERVERS[config.method](
            link, peers, params, blocks, config, samples=samples, timeline=Timeline(), **hooks
        )

    @property
    def roster(self) -> Any:
        """The clients still in the run (the server's ``Roster``)."""
        return self.server.roster

    def run(self) -> BCDResult:
        records = self.server.run()
        losses = conclude(self.server)
        return BCDResult.of(self.server, records, losses, self.link.stats(), self.t0)

    def checkpoint(self) -> Checkpoint:
        """The server's ``checkpoint()`` (FedBCD) with the run's seconds so far."""
        ckpt = self.server.checkpoint()
        ckpt.state["wall_seconds"] = time.perf_counter() - self.t0
        return ckpt

    def restore(self, ckpt: Checkpoint) -> None:
        """Go on from a ``checkpoint()`` (before ``run()``); ``ValueError`` when it does not fit."""
        wall = ckpt.state.get("wall_seconds", 0.0)
        if not isinstance(wall, (int, float)) or isinstance(wall, bool):
            raise ValueError(f"checkpoint's wall_seconds must be a number, got {wall!r}")
        self.server.restore(ckpt)
        self.t0 = time.perf_counter() - float(wall)


def bcd_server(config: BCDConfig, link: Any, peers: list[str], on_progress: Progress | None = None) -> BCDServerRun:
    """The registry's server role: the global model and sample counts built from the config.
    A resumable method's progress events carry the round's checkpoint."""
    params, blocks = global_model(config)
    samples = [len(d.train) for d in client_data(config)]
    run = BCDServerRun(config, link, peers, params, blocks, samples)

    def on_record(rec: RoundRecord) -> None:
        if on_progress is not None:
            ckpt = run.checkpoint if run.server.resumable else None  # built only by a caller that keeps it
            on_progress(ProgressEvent(1, rec.train_loss, f"round {rec.round + 1}/{config.rounds}", rec, ckpt))

    run.server.on_record = on_record
    run.server.keep_cuts = on_progress is not None and config.output.checkpoint  # ParaBlock's per-round copy
    return run


def bcd_client(config: BCDConfig, link: Any, index: int) -> Any:
    """The registry's client role ``index``: its model and shard built from the config."""
    if config.transport.kind == "zmq":  # a client process of its own (threads share the process)
        torch.set_num_threads(max(1, config.threads_per_client))
    return make_client(
        config, link, build_trainer(config, index, client_data(config)[index]), index, timeline=Timeline()
    )
