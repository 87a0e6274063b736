"""FL-GLM / FedSEA-LLaMA split learning: the step, noise on h_A, the client/server roles, the config
and the registered spec."""

from .client_role import SplitClientRole
from .noise import add_gaussian_noise
from .server_role import SplitServerRole, StepReport
from .spec import SplitRunResult
from .step import ClientParts, ServerParts, split_train_step

__all__ = [
    "ClientParts",
    "ServerParts",
    "SplitClientRole",
    "SplitRunResult",
    "SplitServerRole",
    "StepReport",
    "add_gaussian_noise",
    "split_train_step",
]
