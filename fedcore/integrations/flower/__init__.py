"""fedcore inside Flower (``pip install 'fedcore[flower]'``): Flower-native strategies and
ClientApps for the round-based methods, and Flower as the control plane of any registered method
with fedcore's transport as its data plane.

- ``FedITStrategy`` + ``fedit_client_app``: LoRA FedAvg; the ClientApp also serves Flower's own
  strategies (FedMedian, Krum, the DP wrappers ...), since its updates are plain arrays.
- ``FedBCDStrategy`` + ``fedbcd_client_app``: one block per round, deltas up, the aggregate down.
- ``FibecFedStrategy`` + ``fibecfed_client_app``: the initialization phase as queries (layer scores
  up, the GAL down), then rounds with GAL-only uploads and client-side neuron masks.
- ``control_server_app`` + ``control_client_app``: every registered method (split learning in all
  three modes, ParaBlock, FedCyBGD, ...) with Flower discovering the nodes and handing
  out CURVE keys, and every per-step message on fedcore's transport.
- ``server_app`` / ``client_app``: the app of a config's method (native where one exists).

The fedcore config comes from Flower's ``run_config`` (``config_from_run_config``: dotted keys are
fedcore's tables) unless a factory is given one; a node's shard is ``node_config["partition-id"]``.
"""

from __future__ import annotations

try:
    import flwr  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without flwr
    raise ImportError(
        "fedcore.integrations.flower needs Flower: pip install 'fedcore[flower]' (flwr[simulation])"
    ) from exc

from .apps import client_app, server_app
from .config import config_from_run_config, partition_of, run_config_of
from .control import control_client_app, control_server_app
from .fedbcd import FedBCDStrategy, fedbcd_client_app, fedbcd_server_app
from .fedit import FedITStrategy, fedit_client_app, fedit_server_app
from .fibecfed import FibecFedStrategy, fibecfed_client_app, fibecfed_server_app

__all__ = [
    "FedBCDStrategy",
    "FedITStrategy",
    "FibecFedStrategy",
    "client_app",
    "config_from_run_config",
    "control_client_app",
    "control_server_app",
    "fedbcd_client_app",
    "fedbcd_server_app",
    "fedit_client_app",
    "fedit_server_app",
    "fibecfed_client_app",
    "fibecfed_server_app",
    "partition_of",
    "run_config_of",
    "server_app",
]
