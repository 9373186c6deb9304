"""Evaluation: full-catalogue ranking metrics and the harness that writes results.json + predictions.jsonl."""

from sidrec.evaluate.harness import load_results, write_evaluation
from sidrec.evaluate.metrics import KS, hr_ndcg, target_ranks

__all__ = ["KS", "hr_ndcg", "target_ranks", "write_evaluation", "load_results"]
