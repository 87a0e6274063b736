"""Federated block-coordinate descent: FedBCD, FedCyBGD (cyclic, compressed download) and
ParaBlock (communication overlapped with computation, one- or k-round-stale corrected updates).

``run_bcd(BCDConfig(method=...))`` runs one; the roles (``BCDServer``, ``ParaBlockServer``,
``FedCyBGDServer``, ``BlockClient``, ``CyclicClient``) talk to any ``fedcore.transport`` Link.
"""

from .client import BlockClient, expected_local
from .compress import apply_download, encode_download, prune_magnitude, prune_rows
from .config import BCDConfig, CompressionConfig, bcd_config_from_dict, bcd_config_to_dict, tiny_bcd_config
from .cyclic import CyclicClient, FedCyBGDServer, responsible_blocks
from .local import BlockTrainer, LocalBlockTraining, add_scaled_, snapshot
from .quadratic import QuadraticBlockTrainer
from .runner import BCDResult, run_bcd, run_inprocess
from .schedule import BlockSchedule, sample_participants
from .server import BCDServer, ParaBlockServer, RoundRecord
from .timeline import Timeline, overlap_seconds, plot_timeline

__all__ = [
    "BCDConfig",
    "BCDResult",
    "BCDServer",
    "BlockClient",
    "BlockSchedule",
    "BlockTrainer",
    "CompressionConfig",
    "CyclicClient",
    "FedCyBGDServer",
    "LocalBlockTraining",
    "ParaBlockServer",
    "QuadraticBlockTrainer",
    "RoundRecord",
    "Timeline",
    "add_scaled_",
    "apply_download",
    "bcd_config_from_dict",
    "bcd_config_to_dict",
    "encode_download",
    "expected_local",
    "overlap_seconds",
    "plot_timeline",
    "prune_magnitude",
    "prune_rows",
    "responsible_blocks",
    "run_bcd",
    "run_inprocess",
    "sample_participants",
    "snapshot",
    "tiny_bcd_config",
]
