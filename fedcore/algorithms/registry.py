"""The algorithm registry: what the runtime, the CLI and integrations know of a method.

A method is a folder plus one ``register_algorithm(AlgorithmSpec(...))`` call. The spec names the
config class and builds the server role and one client role over a ``transport.Link``; the role
objects only need ``run()``. The server role's ``run()`` returns the method's result, which
``spec.report`` turns into the run's summary (``RunReport``) for tables, metrics and plots.

    register_algorithm(AlgorithmSpec(
        name="mymethod", config_class=MyConfig,
        server=lambda config, link, peers, on_progress: MyServer(link, peers, config, on_progress),
        client=lambda config, link, index: MyClient(link, config, index),
        report=lambda config, result, wire: RunReport(losses=result.losses, ...),
    ))
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from fedcore.config import TransportConfig, build_config


class Role(Protocol):
    def run(self) -> Any: ...


class AlgorithmConfig(Protocol):
    """What the runtime reads of every method's config."""

    @property
    def transport(self) -> TransportConfig: ...

    @property
    def num_clients(self) -> int: ...


@dataclass
class Checkpoint:
    """A server role's state after ``round`` complete rounds, enough to go on from there.

    ``tensors``: CPU tensors (the global adapter and any other tensor state; names under
    ``__rng__/`` are reserved for RNG states, e.g. ``__rng__/torch``, a generator's uint8 state);
    ``state``: JSON-ready values (RNG states as lists, the roster, counters, the schedule, the
    per-round results so far). After a JSON round trip tuples come back as lists and dict keys as
    strings: a method stores what it can read back. ``fedcore.runtime.checkpoint`` saves and loads it.

    Resume protocol: a server role that supports resume emits, at the end of each round, a
    ``ProgressEvent`` with ``checkpoint`` set (``round`` = rounds complete), and has a method
    ``restore(checkpoint: Checkpoint) -> None``, called after construction and before ``run()``;
    ``run()`` then continues with the round after ``checkpoint.round - 1``, i.e. from round
    ``checkpoint.round`` (rounds count from 0), and returns the result of the whole run."""

    round: int  # rounds complete
    tensors: dict[str, torch.Tensor]  # CPU tensors
    state: dict[str, Any]  # JSON-ready: RNG states, roster, counters, schedule


def python_rng_state(rng: random.Random) -> list[Any]:
    """``rng.getstate()`` as JSON: [version, [625 ints], gauss_next (float or None)]."""
    version, internal, gauss_next = rng.getstate()
    return [version, list(internal), gauss_next]


def restore_python_rng(rng: random.Random, state: list[Any]) -> random.Random:
    """Set ``rng`` to a ``python_rng_state`` (also after a JSON round trip); returns ``rng``.
    ``ValueError`` if ``state`` is not one."""
    try:
        version, internal, gauss_next = state
        rng.setstate((int(version), tuple(int(x) for x in internal), None if gauss_next is None else float(gauss_next)))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a python_rng_state: {' '.join(str(exc).split())}") from exc
    return rng


@dataclass
class ProgressEvent:
    """What a server role reports as work completes: ``advance`` units of ``AlgorithmSpec.total``
    done, the latest ``loss`` (nats/token), a ``label`` for a progress bar, and the method's own
    ``record`` of it (split: a ``StepReport``; BCD: a ``RoundRecord``; fibecfed/fedit: the round).
    ``checkpoint``: at the end of each round, a server role that supports resume (see
    ``Checkpoint``) passes a function that builds the round's ``Checkpoint``, None otherwise.
    Building one costs copies (and, for split, a message exchange with every client), so only a
    callback that keeps it calls it, and only while it runs: the role goes on once the callback
    returns. ``built()`` is the event with its checkpoint built. A method whose progress unit is
    not the round (split: steps) sends the checkpoint in an event of its own, with
    ``advance = 0`` and ``record = None``."""

    advance: int
    loss: float
    label: str
    record: Any = None
    checkpoint: Callable[[], Checkpoint] | None = None

    def built(self) -> BuiltProgressEvent:
        """This event with ``checkpoint`` built (call within the progress callback)."""
        ckpt = self.checkpoint() if self.checkpoint is not None else None
        return BuiltProgressEvent(self.advance, self.loss, self.label, self.record, ckpt)


@dataclass
class BuiltProgressEvent:
    """A ``ProgressEvent`` whose checkpoint was built (``ProgressEvent.built``): what a caller
    keeps, e.g. a test comparing checkpoints or a runner saving them."""

    advance: int
    loss: float
    label: str
    record: Any = None
    checkpoint: Checkpoint | None = None


Progress = Callable[[ProgressEvent], None]


@dataclass
class ReportTable:
    """One table of a run's summary: a title, column names, rows of formatted cells."""

    title: str
    columns: list[str]
    rows: list[list[str]]


@dataclass
class TrainedModel:
    """What a run trained, method-independent, for export and evaluation after the run.

    ``apply(model, client)`` turns a fresh frozen base (``builders.base_model`` of the run's config,
    on the CPU) into the model client ``client`` ends with, in place: LoRA injected and loaded, or
    trained full-parameter blocks copied in. ``kind``: ``"lora"`` (exported as a peft adapter) or
    ``"full"`` (a ``save_pretrained`` folder); ``shared``: every client ends with the same model
    (one artifact, ``global``); ``clients``: the clients that have one (dropped ones are left out)."""

    kind: Literal["lora", "full"]
    apply: Callable[[Any, int], None]
    shared: bool
    clients: list[int]


@dataclass
class RunReport:
    """A finished run, method-independent. ``losses``: the numbers two runs of one config are
    compared by (per client or per round, as the method defines them; NaN: dropped);
    ``tables``: the summary tables; ``records``: (kind, fields) lines for metrics.jsonl;
    ``curve``: (x, loss) points of the loss plot with ``x_label``; ``summary``: the summary record;
    ``plots(run_dir)``: extra plots the method draws, returns their paths; ``trained``: what the
    run trained (None: nothing to export)."""

    losses: list[float]
    tables: list[ReportTable]
    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    curve: list[tuple[float, float]] = field(default_factory=list)
    x_label: str = "step"
    summary: dict[str, Any] = field(default_factory=dict)
    plots: Callable[[Path], list[Path]] | None = None
    trained: TrainedModel | None = None


@dataclass(frozen=True)
class AlgorithmSpec:
    """One method. ``server(config, link, peers, on_progress)`` builds the server role for clients
    ``peers`` (peer ids in client order); ``client(config, link, index)`` builds client ``index``'s
    role; ``report(config, result, wire)`` summarises the server role's result (``wire``: the
    server link's byte counts); ``total(config)`` is the progress bar's length in the units
    ``on_progress`` advances; ``describe(config)`` one line for the start of a run; ``fixed``
    holds config fields the name implies (FedBCD and ParaBlock share BCDConfig: ``method``).
    ``resumable``: the server role follows ``Checkpoint``'s resume protocol (``fedcore run
    --resume`` and ``fedcore serve --resume`` accept the method); ``resume_refusal(config)`` says
    why a config of it cannot resume (None: it can), checked before anything starts; a
    checkpoint's ``state["progress"]`` says how much of ``total`` it had done (default: its
    rounds). ``client_data(config)``: every client's ``builders.ClientData`` as the method shards
    it, for the evaluation after the run (default: ``builders.client_datasets`` of the config's
    ``data``). ``check_model(config, model)`` raises ``ValueError`` when the loaded base does not
    fit the config (e.g. fewer layers than the split needs), before any process starts (default:
    the model's decoder layers can be found)."""

    name: str
    config_class: type
    server: Callable[[Any, Any, list[str], Progress | None], Role]
    client: Callable[[Any, Any, int], Role]
    report: Callable[[Any, Any, dict[str, dict[str, int]]], RunReport]
    total: Callable[[Any], int] = lambda config: 0
    describe: Callable[[Any], str] = lambda config: ""
    fixed: dict[str, Any] = field(default_factory=dict)
    resumable: bool = False
    resume_refusal: Callable[[Any], str | None] = lambda config: None
    client_data: Callable[[Any], list[Any]] | None = None
    check_model: Callable[[Any, Any], None] = lambda config, model: _check_layers(model)

    def config_from_dict(self, data: dict[str, Any]) -> Any:
        """The config of a TOML file's tables (``algorithm`` names this spec)."""
        data = {k: v for k, v in data.items() if k != "algorithm"}
        for key in self.fixed:
            if key in data:
                raise ValueError(f"key {key!r} is gone: write algorithm = {data[key]!r} instead")
        config = build_config(self.config_class, data)
        return dataclasses.replace(config, **self.fixed) if self.fixed else config

    def config_to_dict(self, config: Any) -> dict[str, Any]:
        """The inverse of ``config_from_dict`` (JSON-ready, with ``algorithm``)."""
        data = dataclasses.asdict(config)
        for key in self.fixed:
            data.pop(key, None)
        data.pop("algorithm", None)
        return {"algorithm": self.name, **data}


def _check_layers(model: Any) -> None:
    from fedcore.model import blocks

    blocks(model)


_REGISTRY: dict[str, AlgorithmSpec] = {}


def register_algorithm(spec: AlgorithmSpec) -> AlgorithmSpec:
    """Make ``spec`` known to the runtime, the CLI and the integrations; returns it."""
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"algorithm {spec.name!r} is registered already")
    _REGISTRY[spec.name] = spec
    return spec


def get_algorithm(name: str) -> AlgorithmSpec:
    """The spec registered as ``name``; ``ValueError`` naming the registered ones otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown algorithm {name!r}; registered: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def algorithms() -> list[str]:
    """The names of every registered algorithm."""
    return sorted(_REGISTRY)


def algorithm_of(config: Any) -> AlgorithmSpec:
    """The spec a config object belongs to (its ``algorithm`` attribute names it)."""
    name = getattr(config, "algorithm", None)
    if not isinstance(name, str):
        raise TypeError(f"{type(config).__name__} has no 'algorithm' name; is it a method's config?")
    return get_algorithm(name)
