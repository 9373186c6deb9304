"""Constrained (size-balanced) RQ-KMeans: every level's clusters hold floor(n/K) or ceil(n/K) items.

MiniOneRec runs `k-means-constrained` per level (min-cost-flow; ~40 s per level at n_init=10 for 4k x 256 here).
We get the same constraint faster: faiss k-means for the start, then Lloyd iterations whose assignment step is
balanced. The balanced assignment prices clusters with entropic optimal transport (Sinkhorn, uniform marginals)
and rounds greedily under exact capacities, so each item lands in its cheapest cluster that still has room.

Above `fit_sample` items (measured in docs/benchmarks.md, "Scale": the exact method costs O(n K) memory per dense
matrix and tens of Sinkhorn passes over it per Lloyd step) the codebooks and prices are fitted on a random sample,
and every item is then assigned in chunks by `balanced_assign_chunked`: each item keeps its `candidates` cheapest
clusters at the sample's prices, Sinkhorn re-prices the clusters on those candidate lists for the whole catalogue,
and a vectorised capacity rounding gives exact sizes floor(n/K) or ceil(n/K) again.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from sidrec.errors import SidrecError
from sidrec.sid.base import SIDEstimator, sq_dists
# above FIT_SAMPLE items the codebooks are fitted on a sample of this size and the rest assigned in chunks (the exact
# method's cost at 20k / 50k / 100k items is in docs/benchmarks.md, "Scale")
from sidrec.sid.rqkmeans import FIT_SAMPLE, kmeans


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


def _capacities(demand: np.ndarray, n: int) -> np.ndarray:
    """floor(n/K) per cluster; the `n mod K` most demanded clusters take one more (ties: lower index)."""
    K = len(demand)
    low, extra = divmod(n, K)
    cap = np.full(K, low, dtype=np.int64)
    cap[np.lexsort((np.arange(K), -demand))[:extra]] += 1
    return cap


def _round(cost: np.ndarray, cand: np.ndarray, cap: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Capacity rounding in vectorised rounds: each unplaced row proposes its cheapest candidate with room, and each
    cluster accepts its cheapest proposals up to its room. Labels (-1: every candidate of that row is full); `size`
    is updated in place."""
    labels = np.full(len(cost), -1, dtype=np.int64)
    active = np.arange(len(cost))
    while len(active):
        A = np.where(size[cand[active]] < cap[cand[active]], cost[active], np.inf)
        j = A.argmin(1)
        best = A[np.arange(len(active)), j]
        ok = np.isfinite(best)
        active, best, k = active[ok], best[ok], cand[active[ok], j[ok]]
        if not len(active):
            break
        order = np.lexsort((active, best, k))  # per cluster, cheapest proposal first
        k_sorted = k[order]
        first = np.r_[0, np.flatnonzero(k_sorted[1:] != k_sorted[:-1]) + 1]
        rank = np.arange(len(order)) - np.repeat(first, np.diff(np.r_[first, len(order)]))
        take = order[rank < (cap - size)[k_sorted]]
        labels[active[take]] = k[take]
        size += np.bincount(k[take], minlength=len(cap))
        rest = np.ones(len(active), dtype=bool)
        rest[take] = False
        active = active[rest]
    return labels


def balanced_assign_chunked(R: np.ndarray, C: np.ndarray, prices: np.ndarray, candidates: int = 32, iters: int = 30,
                            eps: float = 0.1, chunk: int = 32768) -> tuple[np.ndarray, np.ndarray]:
    """`balanced_assign` for catalogues too large for dense (n, K) matrices: labels with sizes floor(n/K) or
    ceil(n/K), and the prices; memory O(n x candidates) beside R.

    Pass 1 keeps each row's `candidates` cheapest clusters at `prices` (the sample's); `iters` Sinkhorn steps on
    those lists re-price the clusters for all n rows (measured: 30 steps place items closer to their centroids than
    500, the rounding does the rest); the rounding places rows by the new prices; rows whose candidates all
    fill up get their full distance row recomputed.
    """
    n, K = len(R), len(C)
    top = min(candidates, K)
    cand = np.empty((n, top), dtype=np.int32)
    dist = np.empty((n, top))
    s1 = s2 = 0.0
    for a in range(0, n, chunk):
        D = sq_dists(R[a:a + chunk], C)
        s1, s2 = s1 + D.sum(), s2 + (D * D).sum()
        c = np.argpartition(D - prices[None, :], top - 1, axis=1)[:, :top] if top < K else np.tile(np.arange(K), (len(D), 1))
        cand[a:a + chunk] = c
        dist[a:a + chunk] = np.take_along_axis(D, c, 1)
    mean = s1 / (n * K)
    scale = (np.sqrt(max(s2 / (n * K) - mean * mean, 0.0)) or 1.0) * eps
    g = _sinkhorn_sparse(dist, cand, K, scale, prices, iters)
    cost = dist - g[cand]
    demand = np.bincount(cand[np.arange(n), cost.argmin(1)], minlength=K)
    cap, size = _capacities(demand, n), np.zeros(K, dtype=np.int64)
    labels = _round(cost, cand, cap, size)
    stuck = np.flatnonzero(labels < 0)
    for a in range(0, len(stuck), chunk):  # every candidate full: all clusters, a chunk at a time
        rows = stuck[a:a + chunk]
        full = sq_dists(R[rows], C) - g[None, :]
        labels[rows] = _round(full, np.broadcast_to(np.arange(K), full.shape), cap, size)
    return labels, g


def _sinkhorn_sparse(dist: np.ndarray, cand: np.ndarray, K: int, scale: float, g: np.ndarray,
                     iters: int = 500, tol: float = 0.02) -> np.ndarray:
    """`sinkhorn_prices` on each row's candidate clusters only (cost `dist`, cluster ids `cand`, both (n, c))."""
    n = len(dist)
    kern = np.exp(-(dist - dist.min(1, keepdims=True)) / scale)
    v = np.exp((g - g.max()) / scale)
    flat = cand.ravel()
    for it in range(iters):
        u = (1.0 / n) / np.maximum((kern * v[cand]).sum(1), 1e-300)
        col = np.bincount(flat, weights=(kern * u[:, None]).ravel(), minlength=K)
        if it % 5 == 0 and np.abs(col * v * K - 1).max() < tol:
            break
        v = (1.0 / K) / np.maximum(col, 1e-300)
    logv = np.log(np.maximum(v, 1e-300))
    return (logv - logv.max()) * scale


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
    order = np.argsort(labels, kind="stable")  # per cluster in item order, as np.add.at summed (20x slower)
    counts = np.bincount(labels, minlength=k)
    sums = np.zeros((k, X.shape[1]))
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    nonempty = counts > 0
    sums[nonempty] = np.add.reduceat(X[order].astype(np.float64), starts[nonempty], axis=0)
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


class ConstrainedRQKMeans(SIDEstimator):
    """Residual k-means with size-balanced clusters per level; `encode` applies the same balanced assignment,
    so encoding the catalogue it was fitted on gives back the balanced codes."""

    method = "rqkmeans-constrained"

    def __init__(self, levels: int = 3, codebook: int = 256, seed: int = 42, collision: str = "reassign",
                 iters: int = 10, eps: float = 0.1, fit_sample: int | None = FIT_SAMPLE):
        super().__init__(levels, codebook, seed, collision)
        if fit_sample is not None and fit_sample < codebook:
            raise SidrecError(f"fit_sample must be at least the codebook size {codebook} (or None: fit on every "
                              f"item), got {fit_sample}")
        self.iters, self.eps, self.fit_sample = iters, eps, fit_sample

    def params(self) -> dict:
        return {**super().params(), "iters": self.iters, "eps": self.eps, "fit_sample": self.fit_sample}

    def _sampled(self, n: int) -> bool:
        return self.fit_sample is not None and n > self.fit_sample

    def memory_estimate(self, n: int, d: int) -> int:
        if not self._sampled(n):  # dense (n, K) float64 matrices: distances, kernel, adjusted costs, sort order
            return super().memory_estimate(n, d) + 6 * 8 * n * self.codebook
        m, top = self.fit_sample, min(32, self.codebook)
        return (2 * 4 * n * d + 3 * 8 * n * top + 2 * 8 * 32768 * (d + self.codebook)  # residuals, lists, a chunk
                + 4 * m * d + 6 * 8 * m * self.codebook)  # the sample's exact fit

    def _fit(self, X: np.ndarray) -> None:
        if self._sampled(len(X)):
            rng = np.random.default_rng(self.seed)
            X = X[np.sort(rng.choice(len(X), self.fit_sample, replace=False))]
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
            if self._sampled(len(R)):  # chunked, re-priced on the whole catalogue
                codes[:, level] = balanced_assign_chunked(R, C, self.prices_[level], eps=self.eps)[0]
            elif len(R) >= self.codebook:  # the fitted prices as warm start: the fitted catalogue gets its fit labels
                codes[:, level] = balanced_assign(sq_dists(R, C), eps=self.eps, prices=self.prices_[level])[0]
            else:  # too few items to balance: plain nearest code
                codes[:, level] = sq_dists(R, C).argmin(1)
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
