"""Constrained (size-balanced) RQ-KMeans: every level's clusters hold floor(n/K) or ceil(n/K) items.

MiniOneRec runs `k-means-constrained` per level (min-cost-flow; ~40 s per level at n_init=10 for 4k x 256 here).
We get the same constraint faster: faiss k-means for the start, then Lloyd iterations whose assignment step is
balanced. The balanced assignment prices clusters with entropic optimal transport (Sinkhorn, uniform marginals)
and rounds greedily under exact capacities, so each item lands in its cheapest cluster that still has room.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from sidrec.sid.base import SIDEstimator, sq_dists
from sidrec.sid.rqkmeans import kmeans


def sinkhorn_prices(D: np.ndarray, eps: float = 0.1, iters: int = 500, tol: float = 0.02,
                    g: np.ndarray | None = None) -> np.ndarray:
    """Column prices g (K,), in units of D, such that argmin_k (D_ik - g_k) splits the rows near-uniformly.

    Sinkhorn scaling (uniform marginals) on costs standardised to unit spread, eps relative to that spread.
    `g` warm-starts it: Lloyd steps move centroids a little, so the previous prices are nearly right. The capacity
    rounding after it repairs what loose convergence leaves, so a 2% tolerance on column masses is enough.
    """
    n, K = D.shape
    scale = (D.std() or 1.0) * eps
    logits = -(D - D.min(1, keepdims=True)) / scale  # row-shifted: every row keeps an entry exp(0) = 1
    kern = np.exp(logits)
    v = np.ones(K) if g is None else np.exp((g - g.max()) / scale)
    for it in range(iters):
        u = (1.0 / n) / np.maximum(kern @ v, 1e-300)
        col = kern.T @ u
        if it % 5 == 0 and np.abs(col * v * K - 1).max() < tol:
            break
        v = (1.0 / K) / np.maximum(col, 1e-300)
    logv = np.log(np.maximum(v, 1e-300))
    return (logv - logv.max()) * scale


def balanced_assign(D: np.ndarray, candidates: int = 32, eps: float = 0.1,
                    prices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Labels with exact sizes floor(n/K) or ceil(n/K), near-cheapest under the cost matrix D (n, K); and the prices."""
    n, K = D.shape
    g = sinkhorn_prices(D, eps, g=prices)
    A = D - g[None, :]
    low, extra = divmod(n, K)  # `extra` clusters may take one more than `low`
    size = np.zeros(K, dtype=np.int64)
    labels = np.full(n, -1)
    top = min(candidates, K)
    cand = np.argpartition(A, top - 1, axis=1)[:, :top] if top < K else np.tile(np.arange(K), (n, 1))
    cost = np.take_along_axis(A, cand, 1)
    order = np.argsort(cost, axis=None, kind="stable")
    rows, cols = np.divmod(order, top)
    for i, k in zip(rows.tolist(), cand[rows, cols].tolist()):
        if labels[i] >= 0:
            continue
        if size[k] < low or (size[k] == low and extra > 0):
            if size[k] == low:
                extra -= 1
            labels[i] = k
            size[k] += 1
    for i in np.flatnonzero(labels < 0):  # candidates all full: cheapest cluster with room
        room = (size < low) | ((size == low) & (extra > 0))
        k = int(np.flatnonzero(room)[np.argmin(A[i, room])])
        if size[k] == low:
            extra -= 1
        labels[i] = k
        size[k] += 1
    return labels, g


def balanced_kmeans(X: np.ndarray, k: int, seed: int, iters: int = 10, niter_init: int = 20,
                    eps: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Balanced k-means: faiss k-means start, then Lloyd steps whose assignment is `balanced_assign`.

    Returns centroids, labels computed from exactly those centroids, and the warm-start prices that produced
    them (so `balanced_assign(D, prices=...)` reproduces the labels). Stops once < 0.5% of items move.
    """
    C = kmeans(X, k, seed, niter_init)
    g_in = None
    labels, g = balanced_assign(sq_dists(X, C), eps=eps)
    for _ in range(iters):
        C, g_in = _means(X, labels, k), g
        new, g = balanced_assign(sq_dists(X, C), eps=eps, prices=g_in)
        changed = (new != labels).mean()
        labels = new
        if changed < 0.005:
            break
    if g_in is None:
        g_in = np.zeros(k)
    return C, labels, g_in


def _means(X: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    sums = np.zeros((k, X.shape[1]))
    np.add.at(sums, labels, X)
    return (sums / np.maximum(np.bincount(labels, minlength=k), 1)[:, None]).astype(np.float32)


class ConstrainedRQKMeans(SIDEstimator):
    """Residual k-means with size-balanced clusters per level; `encode` applies the same balanced assignment,
    so encoding the catalogue it was fitted on gives back the balanced codes."""

    method = "rqkmeans-constrained"

    def __init__(self, levels: int = 3, codebook: int = 256, seed: int = 42, collision: str = "reassign",
                 iters: int = 10, eps: float = 0.1):
        super().__init__(levels, codebook, seed, collision)
        self.iters, self.eps = iters, eps

    def params(self) -> dict:
        return {**super().params(), "iters": self.iters, "eps": self.eps}

    def _fit(self, X: np.ndarray) -> None:
        R = X.copy()
        self.codebooks_, self.prices_ = [], []
        for level in range(self.levels):
            C, labels, g = balanced_kmeans(R, self.codebook, self.seed + level, self.iters, eps=self.eps)
            R -= C[labels]
            self.codebooks_.append(C)
            self.prices_.append(g)

    def _assign(self, Z: np.ndarray) -> np.ndarray:
        codes = np.empty((len(Z), self.levels), dtype=np.int64)
        R = Z.astype(np.float32, copy=True)
        for level, C in enumerate(self.codebooks_):
            D = sq_dists(R, C)
            if len(R) >= self.codebook:  # the fitted prices as warm start: the fitted catalogue gets its fit labels
                codes[:, level] = balanced_assign(D, eps=self.eps, prices=self.prices_[level])[0]
            else:  # too few items to balance: plain nearest code
                codes[:, level] = D.argmin(1)
            R -= C[codes[:, level]]
        return codes

    def _scores(self, R: np.ndarray, level: int) -> np.ndarray:
        # a new item takes its cheapest cluster at the fitted prices: the balanced partition's rule for one item,
        # without rebalancing the new batch among itself
        return sq_dists(R, self.codebooks_[level]) - self.prices_[level][None, :]

    def save(self, folder) -> list[str]:
        return super().save(folder) + save_prices(folder, self.prices_)

    def load_state(self, folder) -> "ConstrainedRQKMeans":
        super().load_state(folder)
        self.prices_ = load_prices(folder, self.levels)
        return self


def save_prices(folder, prices) -> list[str]:
    from pathlib import Path

    from sidrec.io import atomic_path

    with atomic_path(Path(folder) / "prices.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **{f"level_{i}": g for i, g in enumerate(prices)})
    return ["prices.npz"]


def load_prices(folder, levels: int) -> list[np.ndarray]:
    from pathlib import Path

    with np.load(Path(folder) / "prices.npz") as z:
        return [z[f"level_{i}"] for i in range(levels)]
