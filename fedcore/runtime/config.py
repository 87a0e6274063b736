"""Run configuration: keyword-only dataclasses, one per component, loaded from TOML.

Unknown keys and bad values raise ``ValueError`` naming what is allowed, so a typo in a config file
fails before any work starts instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fedcore.data import SKILLS as _SKILLS
from fedcore.lora import TARGET_ALIASES
from fedcore.model.tiny import FAMILIES

_TARGETS = tuple(TARGET_ALIASES)  # q k v o gate up down


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(kw_only=True)
class ModelConfig:
    """The tiny random-weight causal LM the job fine-tunes (fedcore.model.tiny)."""

    family: str = "llama"
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 0  # MLP width; 0: 2 * hidden_size (Llama-3.2-1B: 8192 for hidden 2048)
    vocab_size: int = 0  # embedding and lm_head rows; 0: the tokenizer's (Llama-3.2-1B: 128256)
    # Weight init std. transformers' 0.02 caps a frozen random lm_head's logits near +-2.6 after
    # the final norm (|w| |h| ~ 0.02 sqrt(H) sqrt(H)), so LoRA alone could never fit the task.
    init_std: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.family in FAMILIES, f"model.family must be one of {FAMILIES}, got {self.family!r}")
        _check(self.num_layers >= 3, "model.num_layers must be >= 3 (head, body and tail each need one)")
        _check(self.hidden_size % self.num_heads == 0, "model.hidden_size must be a multiple of num_heads")
        _check(self.num_heads % self.num_kv_heads == 0, "model.num_heads must be a multiple of num_kv_heads")
        _check(self.init_std > 0, f"model.init_std must be > 0, got {self.init_std}")
        _check(self.intermediate_size >= 0, f"model.intermediate_size must be >= 0, got {self.intermediate_size}")
        _check(self.vocab_size >= 0, f"model.vocab_size must be >= 0 (0: the tokenizer's), got {self.vocab_size}")


@dataclass(kw_only=True)
class SplitConfig:
    """Where the model is cut (FL-GLM / FedSEA-LLaMA Blocks_A / Blocks_B / Blocks_C) and how the
    server trains the clients: ``sequential`` (one client's local epoch after another),
    ``client-batch`` (every step, one body pass on all clients' h_A concatenated) or
    ``server-hierarchical`` (one body replica per client, trained concurrently). In the two
    concurrent modes the body replicas and the clients' head/tail LoRA are averaged every
    ``avg_period`` steps (0: once per round); sequential mode averages once per round.
    ``micro_batches`` > 1 pipelines each client step (GPipe within one optimizer step)."""

    blocks_a: int = 1
    blocks_c: int = 1
    mode: str = "client-batch"
    avg_period: int = 0
    micro_batches: int = 1  # > 1: each client step is pipelined in this many micro-batches

    def __post_init__(self) -> None:
        _check(self.blocks_a >= 0 and self.blocks_c >= 0, "split.blocks_a and split.blocks_c must be >= 0")
        _check(
            self.mode in SPLIT_MODES,
            f"split.mode must be one of {SPLIT_MODES}, got {self.mode!r}",
        )
        _check(self.avg_period >= 0, f"split.avg_period must be >= 0 (0: once per round), got {self.avg_period}")
        _check(self.micro_batches >= 1, f"split.micro_batches must be >= 1, got {self.micro_batches}")


SPLIT_MODES = ("sequential", "client-batch", "server-hierarchical")


@dataclass(kw_only=True)
class LoRAConfig:
    """LoRA placed in every head, body and tail layer."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: list(_TARGETS))

    def __post_init__(self) -> None:
        _check(self.r >= 1, f"lora.r must be >= 1, got {self.r}")
        _check(0.0 <= self.dropout < 1.0, f"lora.dropout must be in [0, 1), got {self.dropout}")
        bad = sorted(set(self.targets) - set(_TARGETS))
        _check(
            not bad and bool(self.targets), f"lora.targets must be a non-empty subset of {_TARGETS}, got {bad or '[]'}"
        )


@dataclass(kw_only=True)
class NoiseConfig:
    """FedSEA-LLaMA Gaussian noise on h_A before it leaves the client.

    ``std`` is relative to mean |h_A| of the batch when ``relative`` (sigma = std * mean|h_A|),
    otherwise absolute. 0 turns noise off.
    """

    std: float = 0.02
    relative: bool = True

    def __post_init__(self) -> None:
        _check(self.std >= 0.0, f"noise.std must be >= 0, got {self.std}")


@dataclass(kw_only=True)
class DataConfig:
    """The procedurally generated instruction task and how it is spread over clients."""

    train_per_client: int = 256
    eval_per_client: int = 32
    skills: list[str] = field(default_factory=lambda: list(_SKILLS))
    partition: str = "dirichlet"
    dirichlet_alpha: float = 0.5
    max_len: int = 48
    seed: int = 0

    def __post_init__(self) -> None:
        bad = sorted(set(self.skills) - set(_SKILLS))
        _check(not bad and bool(self.skills), f"data.skills must be a non-empty subset of {_SKILLS}, got {bad or '[]'}")
        _check(
            self.partition in ("iid", "dirichlet"),
            f"data.partition must be 'iid' or 'dirichlet', got {self.partition!r}",
        )
        _check(self.dirichlet_alpha > 0, f"data.dirichlet_alpha must be > 0, got {self.dirichlet_alpha}")
        _check(self.train_per_client >= 1 and self.eval_per_client >= 1, "data.*_per_client must be >= 1")
        _check(self.max_len >= 16, f"data.max_len must be >= 16, got {self.max_len}")


@dataclass(kw_only=True)
class TrainConfig:
    """Rounds of split training: each round every client trains ``local_steps`` steps in turn,
    then the clients' head/tail LoRA is averaged (FedAvg weighted by samples)."""

    clients: int = 4
    rounds: int = 8
    local_steps: int = 12
    batch_size: int = 16
    lr: float = 5e-3
    seed: int = 0
    device: str = "cpu"  # where every process keeps its model parts: cpu | cuda | cuda:N

    def __post_init__(self) -> None:
        for name in ("clients", "rounds", "local_steps", "batch_size"):
            _check(getattr(self, name) >= 1, f"train.{name} must be >= 1, got {getattr(self, name)}")
        _check(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        _check(
            self.device == "cpu" or self.device == "cuda" or self.device.removeprefix("cuda:").isdigit(),
            f"train.device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}",
        )


@dataclass(kw_only=True)
class TransportConfig:
    """How server and clients talk. ``zmq``: separate processes over fedcore.transport on
    loopback, CURVE on, keys generated for the run; ``inprocess``: threads of one process."""

    kind: str = "zmq"
    curve: bool = True
    mbps: float = 0.0  # link bandwidth per direction in MB/s; 0 = unshaped
    latency_ms: float = 0.0
    lease_s: float = 30.0  # a client silent this long (process died, network gone) is dropped from the run
    # A transfer leaves in chunks; on a shaped link each chunk leaves when the link would have
    # carried it, except that an idle link lets ``burst_kib`` out at once (keep it small to model
    # a plain link; chunks much smaller than a transfer let the receiver start on it sooner).
    chunk_kib: int = 8192
    burst_kib: int = 1024

    def __post_init__(self) -> None:
        _check(self.kind in ("zmq", "inprocess"), f"transport.kind must be 'zmq' or 'inprocess', got {self.kind!r}")
        _check(self.mbps >= 0 and self.latency_ms >= 0, "transport.mbps and transport.latency_ms must be >= 0")
        _check(self.lease_s > 0, f"transport.lease_s must be > 0, got {self.lease_s}")
        _check(64 <= self.chunk_kib <= 262144, f"transport.chunk_kib must be in [64, 262144], got {self.chunk_kib}")
        _check(self.burst_kib >= 1, f"transport.burst_kib must be >= 1, got {self.burst_kib}")


CODEC_NAMES = ("raw", "fp16", "bf16", "int8", "int8+noise", "fp8")


@dataclass(kw_only=True)
class CodecConfig:
    """The wire codec of each split direction (fedcore.codec): h_A (client -> server), h_B (server ->
    client), dh_B (client -> server), dh_A (server -> client). ``int8+noise`` (h_A only) draws the
    [noise] section's Gaussian noise inside the packing kernel instead of in a separate pass."""

    h_A: str = "int8+noise"
    h_B: str = "int8"
    dh_B: str = "bf16"
    dh_A: str = "bf16"

    def __post_init__(self) -> None:
        for direction in ("h_A", "h_B", "dh_B", "dh_A"):
            name = getattr(self, direction)
            _check(name in CODEC_NAMES, f"codecs.{direction} must be one of {CODEC_NAMES}, got {name!r}")
            _check(
                name != "int8+noise" or direction == "h_A",
                f"codecs.{direction}: only h_A carries noise; use 'int8' for {direction}",
            )


@dataclass(kw_only=True)
class OutputConfig:
    """Where the run writes ``<dir>/<timestamp>/metrics.jsonl`` and ``loss.png``."""

    dir: str = "runs"
    plot: bool = True


@dataclass(kw_only=True)
class RunConfig:
    """A whole run of the main job (``fedcore run``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    codecs: CodecConfig = field(default_factory=CodecConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self) -> None:
        _check(
            self.split.blocks_a + self.split.blocks_c <= self.model.num_layers - 1,
            f"split.blocks_a + split.blocks_c must be <= model.num_layers - 1 = {self.model.num_layers - 1}",
        )
        _check(
            self.codecs.h_A != "int8+noise" or self.noise.std > 0,
            "codecs.h_A = 'int8+noise' needs noise.std > 0 (or use codecs.h_A = 'int8')",
        )


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    """Instantiate dataclass ``cls`` from a TOML table, recursing into nested dataclasses."""
    if not isinstance(data, dict):
        raise ValueError(f"[{where}] must be a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in [{where}]; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{where}.{name}" if where != "config" else name)
        else:
            kwargs[name] = _coerce(value, hint, f"{where}.{name}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where} must be a list, got {value!r}")
        return list(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (type(value) is not hint):
        raise ValueError(f"{where} must be {hint.__name__}, got {value!r}")
    return value


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """A RunConfig from nested dicts (TOML tables); raises ValueError on unknown keys or bad types."""
    return _build(RunConfig, data, "config")


DEFAULT_CONFIG = "default.toml"  # in the fedcore.configs package data


def load_config(path: str | Path | None = None) -> RunConfig:
    """Load a TOML config; ``None`` gives the embedded default run (fedcore/configs/default.toml)."""
    if path is None:
        text = resources.files("fedcore").joinpath("configs", DEFAULT_CONFIG).read_text()
        return config_from_dict(_parse(text, DEFAULT_CONFIG))
    return config_from_dict(read_toml(path))


def read_toml(path: str | Path) -> dict[str, Any]:
    """The tables of a TOML file; ``ValueError`` if it is missing or not valid TOML."""
    if not Path(path).is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    return _parse(Path(path).read_text(), str(path))


def _parse(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{where}: invalid TOML: {err}") from err


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """Plain nested dicts (JSON/TOML-ready) of a config, e.g. for the metrics file header."""
    return dataclasses.asdict(config)
