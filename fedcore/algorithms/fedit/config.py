"""The config of a FedIT run (``algorithm = "fedit"``): the shared components plus FedAvg's own knobs.

FedIT (Zhang et al., "Towards Building the Federated GPT: Federated Instruction Tuning") is FedAvg
over LoRA adapters: each round a fraction ``participation`` of the clients trains the global
adapter for ``train.local_steps`` AdamW steps on its own instruction data and the server averages
the adapters they upload, weighted by their training-example counts when ``weight_by_samples``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fedcore.config import (
    DataConfig,
    LoRAConfig,
    ModelConfig,
    OutputConfig,
    TrainConfig,
    TransportConfig,
    check,
    check_choices,
)


@dataclass(kw_only=True)
class FedITConfig:
    """One FedIT run. ``participation``: the fraction of the clients still in the run sampled each
    round (at least one, rounded up); ``weight_by_samples``: FedAvg weights are the clients'
    training-example counts (else equal); ``round_timeout_s``: seconds the server waits for one
    round's uploads (or one evaluation's replies) before it drops the clients still missing."""

    algorithm: Literal["fedit"] = "fedit"
    model: ModelConfig = field(default_factory=lambda: ModelConfig(hidden_size=64, num_layers=4))
    data: DataConfig = field(
        default_factory=lambda: DataConfig(train_per_client=64, eval_per_client=16, dirichlet_alpha=0.5, max_len=48)
    )
    lora: LoRAConfig = field(default_factory=lambda: LoRAConfig(r=8, alpha=16.0, targets=["q", "v"]))
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(clients=4, rounds=5, local_steps=4, batch_size=8, lr=3e-3)
    )
    transport: TransportConfig = field(default_factory=lambda: TransportConfig(kind="inprocess"))
    output: OutputConfig = field(default_factory=OutputConfig)
    participation: float = 1.0
    weight_by_samples: bool = True
    round_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        check_choices(self, "")
        check(
            0.0 < self.participation <= 1.0,
            f"participation must be in (0, 1] (the fraction of clients per round), got {self.participation}",
        )
        check(self.round_timeout_s > 0, f"round_timeout_s must be > 0, got {self.round_timeout_s}")

    @property
    def num_clients(self) -> int:
        return self.train.clients
