"""Semantic IDs: four builders sharing one estimator base (collisions, quality), MiniOneRec index.json I/O."""

from sidrec.sid.base import SIDEstimator, check_embeddings, dedup_level, sid_quality
from sidrec.sid.assign import assign_sids
from sidrec.sid.build import METHODS, build_sids, load_estimator, make_estimator, read_quality
from sidrec.sid.constrained import ConstrainedRQKMeans, balanced_assign
from sidrec.sid.io import codes_to_tokens, load_sids, token, write_index
from sidrec.sid.plus import RQKMeansPlus
from sidrec.sid.rqkmeans import RQKMeans
from sidrec.sid.rqvae import RQVAE

__all__ = ["METHODS", "RQVAE", "ConstrainedRQKMeans", "RQKMeans", "RQKMeansPlus", "SIDEstimator", "assign_sids",
           "balanced_assign", "build_sids", "check_embeddings", "codes_to_tokens", "dedup_level", "load_estimator",
           "load_sids", "make_estimator", "read_quality", "sid_quality", "token", "write_index"]
