"""FL-GLM / FedSEA-LLaMA split learning: the step, noise on h_A, and the in-process runner."""

from .inprocess import SplitRunResult, StepRecord, run_split_inprocess
from .noise import add_gaussian_noise
from .step import ClientParts, ServerParts, split_eval_loss, split_train_step

__all__ = [
    "ClientParts",
    "ServerParts",
    "SplitRunResult",
    "StepRecord",
    "add_gaussian_noise",
    "run_split_inprocess",
    "split_eval_loss",
    "split_train_step",
]
