"""One FibecFed run's settings (the simulation's and the transport roles'): the shared model, data,
transport and output components plus the method's own fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fedcore.config import DataConfig, ModelConfig, OutputConfig, TransportConfig, check, check_choices


@dataclass(kw_only=True)
class FibecFedConfig:
    """One run. ``method``: "fibecfed", or "fedit" for the simulation's baseline (every layer in the
    GAL, no curriculum, no masks; the registered ``fedit`` algorithm is its own folder); the three
    switches give the ablations. ``model`` is the tiny Llama (LoRA r ``lora_r`` on q and v);
    ``data``: the generated task, ``samples_per_client`` examples per client on average,
    Dirichlet(``data.dirichlet_alpha``) over skills, at most ``data.max_len`` tokens."""

    method: Literal["fibecfed", "fedit"] = "fibecfed"
    model: ModelConfig = field(default_factory=lambda: ModelConfig(hidden_size=64, num_layers=4))
    data: DataConfig = field(default_factory=lambda: DataConfig(dirichlet_alpha=1.0, max_len=48))
    transport: TransportConfig = field(default_factory=lambda: TransportConfig(kind="inprocess"))
    output: OutputConfig = field(default_factory=OutputConfig)
    curriculum: bool = True
    gal_ratio: float = 0.75  # the paper's 18 of 24 layers
    gal_eigengap: bool = False  # count the GAL with the gap rule (layers.eigengap_count) instead of gal_ratio
    neuron_selection: bool = True
    rho: float = 0.5
    fisher_epochs: int = 1
    beta: float = 0.6
    alpha: float = 0.8
    pace: Literal["linear", "sqrt", "exp"] = "linear"
    gamma: float = 0.01
    clients: int = 100
    per_round: int = 10
    rounds: int = 20
    samples_per_client: int = 24
    eval_clients: int = 10
    batch_size: int = 8
    lr: float = 0.01
    lora_r: int = 8
    seed: int = 0
    # where the model and batches live (the Fisher statistics use the fused kernels on cuda)
    device: Literal["cpu", "cuda"] = "cpu"

    def __post_init__(self) -> None:
        check_choices(self, "")
        check(
            0 < self.per_round <= self.clients and 0 < self.eval_clients <= self.clients,
            "need 0 < per_round <= clients and 0 < eval_clients <= clients",
        )
        check(0.0 <= self.gal_ratio <= 1.0 and 0.0 <= self.rho <= 1.0, "gal_ratio and rho must be in [0, 1]")
        for name in ("rounds", "samples_per_client", "batch_size", "lora_r", "fisher_epochs"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def algorithm(self) -> str:
        """The registry name; ``method = "fedit"`` is the simulation's baseline run by these roles."""
        return "fibecfed"

    @property
    def num_clients(self) -> int:
        return self.clients
