"""Reusable teacher regularisers: usable in kdlab's teacher methods and in any training loop."""

from kdlab.regularizers.consistency import ConsistencyRegularizer, consistency_weight
from kdlab.regularizers.lipschitz import LipschitzRegularizer

__all__ = ["ConsistencyRegularizer", "LipschitzRegularizer", "consistency_weight"]
