"""Reusable teacher regularisers: usable in kdlab's teacher methods and in any training loop."""

from .consistency import ConsistencyRegularizer, consistency_weight
from .lipschitz import LipschitzRegularizer

__all__ = ["ConsistencyRegularizer", "LipschitzRegularizer", "consistency_weight"]
