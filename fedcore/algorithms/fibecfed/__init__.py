"""FibecFed (EMNLP 2024): Fisher-information curriculum, global-aggregation-layer selection and
neuron-wise sparse LoRA updates. This package holds the method's formulas as pure functions
(``curriculum``, ``layers``, ``neurons``), the client-side work (``local``), an in-process
simulation of N clients with the FedIT baseline and the ablations (``simulate``), and the same
client code as server/client roles over a ``Link`` (``roles``), registered as ``fibecfed``
(``spec``; threads or processes: ``fedcore.runtime.run_threads`` / ``run_processes``).
"""

from .config import FibecFedConfig
from .curriculum import PACE_FUNCTIONS, batches_in_round, order_by_difficulty, pace
from .layers import aggregate_layer_scores, layer_output_sensitivity, select_global_layers
from .neurons import NeuronMask, neuron_scores, top_neurons
from .simulate import FibecFedResult, run_fibecfed

__all__ = [
    "FibecFedConfig",
    "FibecFedResult",
    "run_fibecfed",
    "PACE_FUNCTIONS",
    "NeuronMask",
    "aggregate_layer_scores",
    "batches_in_round",
    "layer_output_sensitivity",
    "neuron_scores",
    "order_by_difficulty",
    "pace",
    "select_global_layers",
    "top_neurons",
]
