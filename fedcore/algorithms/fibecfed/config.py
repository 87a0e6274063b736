"""One FibecFed / FedIT run's settings (the simulation's and the transport roles')."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True)
class FibecFedConfig:
    """One simulated run. ``method``: "fibecfed" or "fedit"; the three switches give the ablations."""

    method: str = "fibecfed"
    curriculum: bool = True
    gal_ratio: float = 0.75  # the paper's 18 of 24 layers
    gal_eigengap: bool = False  # count the GAL with the gap rule (layers.eigengap_count) instead of gal_ratio
    neuron_selection: bool = True
    rho: float = 0.5
    fisher_epochs: int = 1
    beta: float = 0.6
    alpha: float = 0.8
    pace: str = "linear"
    gamma: float = 0.01
    clients: int = 100
    per_round: int = 10
    rounds: int = 20
    samples_per_client: int = 24
    eval_clients: int = 10
    batch_size: int = 8
    lr: float = 0.01
    lora_r: int = 8
    layers: int = 4
    hidden: int = 64
    dirichlet_alpha: float = 1.0
    seed: int = 0
    device: str = (
        "cpu"  # cpu | cuda: where the model and batches live (the Fisher statistics use the fused kernels on cuda)
    )

    def __post_init__(self) -> None:
        if self.method not in ("fibecfed", "fedit"):
            raise ValueError(f"method must be 'fibecfed' or 'fedit', got {self.method!r}")
        if not 0 < self.per_round <= self.clients or not 0 < self.eval_clients <= self.clients:
            raise ValueError("need 0 < per_round <= clients and 0 < eval_clients <= clients")
        if not 0.0 <= self.gal_ratio <= 1.0 or not 0.0 <= self.rho <= 1.0:
            raise ValueError("gal_ratio and rho must be in [0, 1]")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
