"""FL-GLM / FedSEA-LLaMA split learning: the step, noise on h_A, the client/server roles and runners."""

from .client_role import SplitClientRole
from .inprocess import SplitRunResult, run_split_inprocess
from .noise import add_gaussian_noise
from .server_role import SplitServerRole, StepReport
from .step import ClientParts, ServerParts, split_train_step

__all__ = [
    "ClientParts",
    "ServerParts",
    "SplitClientRole",
    "SplitRunResult",
    "SplitServerRole",
    "StepReport",
    "add_gaussian_noise",
    "run_split_inprocess",
    "split_train_step",
]
