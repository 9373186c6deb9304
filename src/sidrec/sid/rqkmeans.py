"""RQ-KMeans: plain residual k-means, one faiss k-means per level on what earlier levels left unexplained.

Unbalanced by nature (big clusters for dense regions), so collisions are more frequent than with the balanced methods.
Any codebook size works: faiss.Kmeans has no power-of-two restriction (faiss.ResidualQuantizer, which MiniOneRec
uses, does: it takes nbits).
"""

from __future__ import annotations

import numpy as np

from sidrec.sid.base import SIDEstimator


def kmeans(X: np.ndarray, k: int, seed: int, niter: int = 20, nredo: int = 1) -> np.ndarray:
    """faiss k-means centroids (k, d); deterministic for a given seed and thread count."""
    import faiss

    km = faiss.Kmeans(X.shape[1], k, niter=niter, nredo=nredo, seed=int(seed), verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=1 << 30)  # no subsampling, no warning
    km.train(np.ascontiguousarray(X, dtype=np.float32))
    return km.centroids.copy()


class RQKMeans(SIDEstimator):
    method = "rqkmeans"

    def __init__(self, levels: int = 3, codebook: int = 256, seed: int = 42, collision: str = "reassign",
                 niter: int = 20, nredo: int = 1):
        super().__init__(levels, codebook, seed, collision)
        self.niter, self.nredo = niter, nredo

    def params(self) -> dict:
        return {**super().params(), "niter": self.niter, "nredo": self.nredo}

    def _fit(self, X: np.ndarray) -> None:
        R = X.copy()
        self.codebooks_ = []
        for level in range(self.levels):
            C = kmeans(R, self.codebook, self.seed + level, self.niter, self.nredo)
            R -= C[self._nearest(R, C)]
            self.codebooks_.append(C)

    @staticmethod
    def _nearest(R, C):
        from sidrec.sid.base import sq_dists

        return sq_dists(R, C).argmin(1)
