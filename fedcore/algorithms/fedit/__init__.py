"""FedIT (Zhang et al., "Towards Building the Federated GPT: Federated Instruction Tuning"): FedAvg
of LoRA adapters over a frozen base, as a registered algorithm (``algorithm = "fedit"``).

``FedITServer`` / ``FedITClient`` talk over any ``fedcore.transport`` Link; importing this package
registers the method (``spec.SPEC``).
"""

from . import spec as _spec  # noqa: F401  (registers "fedit")
from .config import FedITConfig
from .roles import FedITClient, FedITResult, FedITServer

__all__ = ["FedITClient", "FedITConfig", "FedITResult", "FedITServer"]
