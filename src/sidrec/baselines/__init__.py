"""Classical baselines reported through the evaluation harness: most-popular and SASRec."""

from sidrec.baselines.config import SasrecConfig
from sidrec.baselines.pop import run_pop

__all__ = ["run_pop", "run_sasrec", "SasrecConfig", "SasrecScorer"]


def __getattr__(name: str):
    # SASRec's model code needs torch; load it on first use so that reading its settings stays fast
    if name in ("run_sasrec", "SasrecScorer"):
        from sidrec.baselines import sasrec

        return getattr(sasrec, name)
    raise AttributeError(f"module 'sidrec.baselines' has no attribute '{name}'")
