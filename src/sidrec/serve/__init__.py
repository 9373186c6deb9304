"""Serving: `Recommender` (top-k items for histories) on the torch, int8 or onnx backend."""

from sidrec.serve.backends import BACKENDS
from sidrec.serve.recommender import Recommendation, Recommender

__all__ = ["Recommender", "Recommendation", "BACKENDS"]
