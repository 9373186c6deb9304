"""Data stage: the canonical dataset folder and the importers/exporters that produce or consume it."""

from sidrec.data.canonical import SPLITS, Dataset

__all__ = ["SPLITS", "Dataset"]
