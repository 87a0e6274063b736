"""fedcore.algorithms: the registry (``register_algorithm`` / ``get_algorithm``), the shared
roster, mailbox and protocol error, and one folder per federated method. Importing this package
registers the built-in methods: split, fedit, fibecfed, fedbcd, parablock, fedcybgd."""

from .bcd import spec as _bcd_spec  # noqa: F401,I001
from .fedit import spec as _fedit_spec  # noqa: F401
from .fibecfed import spec as _fibecfed_spec  # noqa: F401
from .registry import (
    AlgorithmSpec,
    BuiltProgressEvent,
    Checkpoint,
    Progress,
    ProgressEvent,
    ReportTable,
    RunReport,
    TrainedModel,
    algorithm_of,
    algorithms,
    get_algorithm,
    register_algorithm,
)
from .roster import AllClientsLost, ProtocolViolation, Roster
from .split import spec as _split_spec  # noqa: F401  (each import registers its method)

__all__ = [
    "AlgorithmSpec",
    "AllClientsLost",
    "BuiltProgressEvent",
    "Checkpoint",
    "Progress",
    "ProgressEvent",
    "ProtocolViolation",
    "ReportTable",
    "Roster",
    "RunReport",
    "TrainedModel",
    "algorithm_of",
    "algorithms",
    "get_algorithm",
    "register_algorithm",
]
