"""Configuration of a federated block-coordinate-descent run (FedBCD, FedCyBGD, ParaBlock)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from fedcore.config import DataConfig, ModelConfig, OutputConfig, TransportConfig, build_config, check_choices
from fedcore.config import check as _check

Method = Literal["fedbcd", "fedcybgd", "parablock"]
METHODS: tuple[str, ...] = get_args(Method)
SCHEDULES = ("random", "sequential", "reverse", "gradient")
PRUNING = ("magnitude", "structured")


@dataclass(kw_only=True)
class CompressionConfig:
    """FedCyBGD download compression. ``drop_ratio``: the fraction of the blocks not yet updated
    in this round that are left out (indicator I = 0; the client keeps its own copy of them);
    ``prune``: how the change of a block already updated in this round is pruned before it is sent
    (``magnitude``: keep the largest ``1 - prune_ratio`` of its entries, sent as index + value;
    ``structured``: keep the rows with the largest L2 norm). The responsible block goes whole."""

    enabled: bool = False
    drop_ratio: float = 0.5
    prune: Literal["magnitude", "structured"] = "magnitude"
    prune_ratio: float = 0.75

    def __post_init__(self) -> None:
        _check(0.0 <= self.drop_ratio <= 1.0, f"compression.drop_ratio must be in [0, 1], got {self.drop_ratio}")
        _check(0.0 <= self.prune_ratio < 1.0, f"compression.prune_ratio must be in [0, 1), got {self.prune_ratio}")
        check_choices(self, "compression")


@dataclass(kw_only=True)
class BCDConfig:
    """One run. Blocks are ``fedcore.model.group_blocks(model, layers_per_block)``; each round the
    chosen block is trained for ``local_steps`` AdamW steps (``mode``: ``full`` parameters or
    ``lora`` factors inside the block). The aggregate is the mean of the clients' deltas (weighted
    by their sample counts when ``weight_by_samples``) and is applied with global lr ``eta``.
    ``participation``: the fraction of clients sampled per round. ``staleness``: ParaBlock's k
    (the aggregate of round t is applied at round t + k). ``round_timeout_s``: a client whose
    upload has not arrived by then is left out of that round's aggregate. ``transport.kind``:
    ``inprocess`` (threads, one process) or ``zmq`` (client processes, CURVE, shaped links)."""

    method: Method = "parablock"
    model: ModelConfig = field(default_factory=lambda: ModelConfig(hidden_size=64, num_layers=10))
    data: DataConfig = field(
        default_factory=lambda: DataConfig(train_per_client=96, eval_per_client=16, dirichlet_alpha=0.1)
    )
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    transport: TransportConfig = field(default_factory=lambda: TransportConfig(kind="inprocess"))
    output: OutputConfig = field(default_factory=OutputConfig)
    layers_per_block: int = 1
    mode: Literal["full", "lora"] = "full"
    lora_r: int = 8
    lora_alpha: float = 16.0
    schedule: Literal["random", "sequential", "reverse", "gradient"] = "random"
    clients: int = 10
    participation: float = 1.0
    rounds: int = 20
    local_steps: int = 5
    batch_size: int = 16
    lr: float = 1e-3
    eta: float = 1.0
    weight_by_samples: bool = True
    staleness: int = 1
    device: Literal["cpu", "cuda"] = "cpu"  # where clients train (the server aggregates on the CPU)
    threads_per_client: int = 1  # torch threads in each client process (zmq transport)
    dtype: Literal["float32", "float64"] = "float32"  # of the model's parameters: float32 | float64 (exactness tests)
    round_timeout_s: float = 600.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_choices(self, "")
        _check(
            1 <= self.layers_per_block <= (10**6 if self.model.is_pretrained else self.model.num_layers),
            f"layers_per_block must be in [1, model.num_layers = {self.model.num_layers}]",
        )  # a checkpoint's depth is checked when its blocks are grouped
        for name in ("clients", "rounds", "local_steps", "batch_size", "lora_r", "staleness"):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        _check(0.0 < self.participation <= 1.0, f"participation must be in (0, 1], got {self.participation}")
        _check(self.lr > 0 and self.eta > 0, "lr and eta must be > 0")
        _check(self.round_timeout_s > 0, f"round_timeout_s must be > 0, got {self.round_timeout_s}")
        _check(
            self.staleness == 1 or self.method == "parablock",
            "staleness > 1 applies to method 'parablock' only",
        )

    @property
    def algorithm(self) -> str:
        """The registry name: FedBCD, ParaBlock and FedCyBGD share this config."""
        return self.method

    @property
    def num_clients(self) -> int:
        return self.clients

    @property
    def num_blocks(self) -> int:
        """Coordinate blocks: the model's layers in groups of ``layers_per_block`` (a checkpoint's
        layer count is read from its config)."""
        from ..builders import layer_count

        return -(-layer_count(self.model) // self.layers_per_block)


def resume_refusal(config: BCDConfig) -> str | None:
    """Why ``config`` cannot resume (None: it can). ParaBlock resumes with staleness 1 only: its
    checkpoint holds one update in flight per client."""
    if config.method == "parablock" and config.staleness != 1:
        return f"parablock resumes with staleness = 1 only (this config: {config.staleness})"
    return None


def tiny_bcd_config(**overrides: Any) -> BCDConfig:
    """A run small enough for tests and smoke checks on 2 CPU cores (seconds): a 4-layer, hidden-32
    Llama, 3 clients with 24 examples each (Dirichlet 0.1), 3 rounds of 2 steps, in-process.
    ``overrides`` are BCDConfig fields (``model=`` / ``data=`` replace those tables whole)."""
    base: dict[str, Any] = dict(
        model=ModelConfig(hidden_size=32, num_layers=4, num_heads=4, num_kv_heads=2),
        data=DataConfig(train_per_client=24, eval_per_client=8, dirichlet_alpha=0.1, max_len=32),
        clients=3,
        rounds=3,
        local_steps=2,
        batch_size=8,
        lr=3e-3,
        round_timeout_s=60.0,
    )
    base.update(overrides)
    return BCDConfig(**base)


def bcd_config_from_dict(data: dict[str, Any]) -> BCDConfig:
    """A BCDConfig from nested dicts (``dataclasses.asdict`` output); ``ValueError`` on unknown keys
    or bad types. A TOML file names its method with ``algorithm = "..."`` instead (the registry)."""
    return build_config(BCDConfig, data)


def bcd_config_to_dict(config: BCDConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)
