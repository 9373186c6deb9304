"""Analysis stage: bad-case patterns of one evaluated model (`sidrec analyze`) and run comparison (`sidrec compare`)."""

from sidrec.analysis.badcase import PATTERNS, AnalysisConfig, check_identity, dataset_identity, run_analysis
from sidrec.analysis.compare import run_compare

__all__ = ["PATTERNS", "AnalysisConfig", "check_identity", "dataset_identity", "run_analysis", "run_compare"]
