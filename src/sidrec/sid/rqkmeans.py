"""RQ-KMeans: plain residual k-means, one faiss k-means per level on what earlier levels left unexplained.

Unbalanced by nature (big clusters for dense regions), so collisions are more frequent than with the balanced methods.
Any codebook size works: faiss.Kmeans has no power-of-two restriction (faiss.ResidualQuantizer, which MiniOneRec
uses, does: it takes nbits).

Above `fit_sample` items the codebooks are fitted on a random sample of that many (seeded: same seed, same SIDs);
every item is then coded against them, a chunk of rows at a time. The default, 65,536, is what faiss itself samples
for 256 centroids (256 points per centroid); up to it the fit sees every item, as before.
"""

from __future__ import annotations

import numpy as np

from sidrec.errors import SidrecError
from sidrec.sid.base import SIDEstimator, nearest

FIT_SAMPLE = 65536  # the balanced method's too (sidrec.sid.constrained)


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
                 niter: int = 20, nredo: int = 1, fit_sample: int | None = FIT_SAMPLE):
        super().__init__(levels, codebook, seed, collision)
        if fit_sample is not None and fit_sample < codebook:
            raise SidrecError(f"fit_sample must be at least the codebook size {codebook} (or None: fit on every "
                              f"item), got {fit_sample}")
        self.niter, self.nredo, self.fit_sample = niter, nredo, fit_sample

    def params(self) -> dict:
        return {**super().params(), "niter": self.niter, "nredo": self.nredo, "fit_sample": self.fit_sample}

    def _sampled(self, n: int) -> bool:
        return self.fit_sample is not None and n > self.fit_sample

    def memory_estimate(self, n: int, d: int) -> int:
        """Two float32 copies of the items (fit residuals, encode residuals), a chunk's float64 distances, and
        the fitted items' float64 copy when they are few enough to be fitted on whole."""
        m = min(n, self.fit_sample) if self.fit_sample is not None else n
        return 2 * 4 * n * d + 3 * 8 * 32768 * (d + self.codebook) + 8 * m * d

    def _fit(self, X: np.ndarray) -> None:
        if self._sampled(len(X)):
            rng = np.random.default_rng(self.seed)
            X = X[np.sort(rng.choice(len(X), self.fit_sample, replace=False))]
        R = X.copy()
        self.codebooks_ = []
        for level in range(self.levels):
            C = kmeans(R, self.codebook, self.seed + level, self.niter, self.nredo)
            R -= C[nearest(R, C)]
            self.codebooks_.append(C)
