"""Classical baselines reported through the evaluation harness: most-popular and SASRec."""

from sidrec.baselines.pop import run_pop
from sidrec.baselines.sasrec import SasrecConfig, SasrecScorer, run_sasrec

__all__ = ["run_pop", "run_sasrec", "SasrecConfig", "SasrecScorer"]
