"""fedcore.fisher: diagonal-Fisher statistics (difficulty scores, diagonals, neuron row sums)."""

from .accumulator import STATS, FisherAccumulator

__all__ = ["STATS", "FisherAccumulator"]
