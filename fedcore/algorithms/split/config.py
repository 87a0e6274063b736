"""The config of a split fine-tuning run (FL-GLM / FedSEA-LLaMA): the shared components plus where
the model is cut, the noise on h_A and the wire codec of each direction. ``load_split_config(None)``
is the embedded default (``fedcore/config/default.toml``), the main job of ``fedcore run``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from fedcore.config import (
    DataConfig,
    LoRAConfig,
    ModelConfig,
    OutputConfig,
    TrainConfig,
    TransportConfig,
    build_config,
    check,
    check_choices,
    parse_toml,
    read_toml,
)

SplitMode = Literal["sequential", "client-batch", "server-hierarchical"]
CodecName = Literal["raw", "fp16", "bf16", "int8", "int8+noise", "fp8"]
SPLIT_MODES: tuple[str, ...] = ("sequential", "client-batch", "server-hierarchical")
CODEC_NAMES: tuple[str, ...] = ("raw", "fp16", "bf16", "int8", "int8+noise", "fp8")


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
    mode: SplitMode = "client-batch"
    avg_period: int = 0
    micro_batches: int = 1  # > 1: each client step is pipelined in this many micro-batches

    def __post_init__(self) -> None:
        check(self.blocks_a >= 0 and self.blocks_c >= 0, "split.blocks_a and split.blocks_c must be >= 0")
        check_choices(self, "split")
        check(self.avg_period >= 0, f"split.avg_period must be >= 0 (0: once per round), got {self.avg_period}")
        check(self.micro_batches >= 1, f"split.micro_batches must be >= 1, got {self.micro_batches}")


@dataclass(kw_only=True)
class NoiseConfig:
    """FedSEA-LLaMA Gaussian noise on h_A before it leaves the client.

    ``std`` is relative to mean |h_A| of the batch when ``relative`` (sigma = std * mean|h_A|),
    otherwise absolute. 0 turns noise off. ``secret``: draw it from OS-seeded streams the server
    cannot regenerate (runs are then not reproducible bit for bit); by default the streams are
    seeded from ``train.seed``, which a server holding the config can replay and subtract.
    """

    std: float = 0.02
    relative: bool = True
    secret: bool = False

    def __post_init__(self) -> None:
        check(math.isfinite(self.std) and self.std >= 0.0, f"noise.std must be >= 0 and finite, got {self.std}")


@dataclass(kw_only=True)
class PrivacyConfig:
    """The Gaussian mechanism on h_A, and the leakage check at the end of every run.

    ``clip`` > 0 turns the mechanism on: each token's h_A row (``unit = "token"``) or each
    example's whole h_A (``unit = "example"``) is scaled to an L2 norm of at most ``clip`` (h_A's
    units), then every element gets N(0, (noise_multiplier * clip)^2). The run reports
    (epsilon, delta) over all its h_A releases (fedcore.privacy.accountant); [noise] must then be
    off (std 0): sigma comes from here. ``leakage_check``: after the run, a linear inverter fitted
    on a shadow sample of client 0's h_A reads the other clients' held-out tokens; its token
    recovery goes into the summary and metrics.jsonl."""

    clip: float = 0.0
    noise_multiplier: float = 0.0
    unit: Literal["token", "example"] = "token"
    delta: float = 1e-5
    leakage_check: bool = True

    def __post_init__(self) -> None:
        check_choices(self, "privacy")
        clip = self.clip
        check(math.isfinite(clip) and clip >= 0, f"privacy.clip must be a finite number >= 0, got {clip}")
        z = self.noise_multiplier
        check(math.isfinite(z) and z >= 0, f"privacy.noise_multiplier must be a finite number >= 0, got {z}")
        check(
            self.clip == 0 or z > 0,
            "privacy.clip > 0 needs privacy.noise_multiplier > 0 (clipping alone is not private)",
        )
        check(0 < self.delta < 1, f"privacy.delta must be in (0, 1), got {self.delta}")

    @property
    def enabled(self) -> bool:
        return self.clip > 0


@dataclass(kw_only=True)
class CodecConfig:
    """The wire codec of each split direction (fedcore.codec): h_A (client -> server), h_B (server ->
    client), dh_B (client -> server), dh_A (server -> client). ``int8+noise`` (h_A only) draws the
    [noise] section's Gaussian noise inside the packing kernel instead of in a separate pass."""

    h_A: CodecName = "int8+noise"
    h_B: CodecName = "int8"
    dh_B: CodecName = "bf16"
    dh_A: CodecName = "bf16"

    def __post_init__(self) -> None:
        check_choices(self, "codecs")
        for direction in ("h_B", "dh_B", "dh_A"):
            check(
                getattr(self, direction) != "int8+noise",
                f"codecs.{direction}: only h_A carries noise; use 'int8' for {direction}",
            )


@dataclass(kw_only=True)
class SplitRunConfig:
    """A whole split fine-tuning run (``algorithm = "split"``, the default of ``fedcore run``)."""

    algorithm: Literal["split"] = "split"
    model: ModelConfig = field(default_factory=ModelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    codecs: CodecConfig = field(default_factory=CodecConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self) -> None:
        if not self.model.is_pretrained:  # a checkpoint's depth is checked when it is split
            check(self.model.num_layers >= 3, "model.num_layers must be >= 3 (head, body and tail each need one)")
            check(
                self.split.blocks_a + self.split.blocks_c <= self.model.num_layers - 1,
                f"split.blocks_a + split.blocks_c must be <= model.num_layers - 1 = {self.model.num_layers - 1}",
            )
        check(
            self.codecs.h_A != "int8+noise" or self.noise.std > 0 or self.privacy.enabled,
            "codecs.h_A = 'int8+noise' needs noise.std > 0 or privacy.clip > 0 (or use codecs.h_A = 'int8')",
        )
        check(
            not (self.privacy.enabled and self.noise.std > 0),
            "privacy.clip > 0 sets the noise (sigma = privacy.noise_multiplier * privacy.clip): set noise.std = 0",
        )

    @property
    def num_clients(self) -> int:
        return self.train.clients


def config_from_dict(data: dict[str, Any]) -> SplitRunConfig:
    """A SplitRunConfig from nested dicts (TOML tables); ValueError on unknown keys or bad types."""
    return build_config(SplitRunConfig, data)


DEFAULT_CONFIG = "default.toml"  # in the fedcore.config package data


def default_config_text() -> str:
    """The embedded default run's TOML (``fedcore/config/default.toml``)."""
    return resources.files("fedcore.config").joinpath(DEFAULT_CONFIG).read_text()


def load_split_config(path: str | Path | None = None) -> SplitRunConfig:
    """Load a split TOML config; ``None`` gives the embedded default run."""
    if path is None:
        return config_from_dict(parse_toml(default_config_text(), DEFAULT_CONFIG))
    return config_from_dict(read_toml(path))
