"""What every SID builder shares: input checks, collision handling and quality statistics.

All four methods are residual quantisers in some latent space Z (Z = X for the k-means methods, an encoder's output
for RQ-VAE and RQ-KMeans+): level l's code is the nearest row of `codebooks_[l]` to the residual left by levels < l.
So a subclass only provides `_fit`, `_latent`, `_assign` and (if it has a decoder) `reconstruct`; collision
resolution here works from the same residual distances for every method.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from sidrec.errors import SidrecError
from sidrec.io import available_memory

COLLISIONS = ("reassign", "dedup-level")


# ---------------------------------------------------------------------------------------------------- helpers
def group_ids(rows: np.ndarray) -> np.ndarray:
    """A dense group id per row such that equal rows share an id (ids follow the sorted order of rows)."""
    rows = np.asarray(rows)
    if rows.ndim == 1:
        rows = rows[:, None]
    if rows.shape[1] == 0:
        return np.zeros(len(rows), dtype=np.int64)
    return np.unique(rows, axis=0, return_inverse=True)[1].reshape(-1)


def sq_dists(R: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Squared L2 distances (len(R), len(C)), float64 so ties and greedy orders are stable across runs."""
    R = R.astype(np.float64, copy=False)
    C = C.astype(np.float64, copy=False)
    return np.maximum((R * R).sum(1)[:, None] - 2.0 * R @ C.T + (C * C).sum(1)[None, :], 0.0)


def nearest(R: np.ndarray, C: np.ndarray, chunk: int = 32768) -> np.ndarray:
    """Index of the nearest row of C for each row of R, `sq_dists` a chunk of rows at a time (the same argmin as on
    all rows at once, without a float64 copy of R or an (n, K) matrix)."""
    return np.concatenate([sq_dists(R[a:a + chunk], C).argmin(1) for a in range(0, len(R), chunk)])


def check_embeddings(X, codebook: int | None = None, what: str = "embeddings") -> np.ndarray:
    """A float32 (n, d) array with no NaN/inf and at least `codebook` rows, or a SidrecError that says what is wrong."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise SidrecError(f"{what}: expected a non-empty 2-D array (items x dim), got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number):
        raise SidrecError(f"{what}: expected numbers, got dtype {X.dtype}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(X).all(1))
    if len(bad):
        raise SidrecError(f"{what}: {len(bad)} row(s) hold NaN or inf (first: item {bad[0]}); re-embed those items")
    if codebook is not None and X.shape[0] < codebook:
        raise SidrecError(f"{what}: {X.shape[0]} items but codebook size {codebook}: k-means needs at least as many "
                          f"items as codes per level; use a smaller --codebook")
    return X


def _gib(b: float) -> str:
    return f"{b / 2**30:.1f} GiB"


def _entropy(counts: np.ndarray, k: int) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum() / math.log(k)) if k > 1 else 1.0


def sid_quality(codes: np.ndarray, codebook: int) -> dict:
    """Collision and code-usage statistics of a SID table (n_items, levels); -1 pads variable-length SIDs."""
    codes = np.asarray(codes, dtype=np.int64)
    n, width = codes.shape
    _, counts = np.unique(codes, axis=0, return_counts=True)
    lengths = (codes >= 0).sum(1)
    shared = counts[counts > 1]
    levels = []
    for level in range(width):
        col = codes[:, level]
        col = col[col >= 0]
        k = max(codebook, int(col.max()) + 1) if len(col) else codebook
        cnt = np.bincount(col, minlength=k)
        used = cnt[cnt > 0]
        levels.append({"level": level, "items": int(len(col)), "used": int(len(used)), "codebook": int(k),
                       "usage": round(len(used) / k, 4), "entropy": round(_entropy(cnt, k), 4),
                       "max_size": int(used.max()) if len(used) else 0, "min_size": int(used.min()) if len(used) else 0})
    return {
        "num_items": int(n),
        "levels": int(width),
        "lengths": {str(int(k)): int(v) for k, v in zip(*np.unique(lengths, return_counts=True))},
        "unique_sids": int(len(counts)),
        "collision_rate": round((n - len(counts)) / n, 6),
        "collision_groups": int(len(shared)),
        "collided_items": int(shared.sum()),
        "max_items_per_sid": int(counts.max()),
        "per_level": levels,
    }


# ---------------------------------------------------------------------------------------------------- estimator
class SIDEstimator:
    """Base of the SID builders: `fit(X)`, then `encode(X)` gives collision-free codes (n, levels)."""

    method = "base"

    def __init__(self, levels: int = 3, codebook: int = 256, seed: int = 42, collision: str = "reassign"):
        if levels < 1:
            raise SidrecError(f"levels must be >= 1, got {levels}")
        if codebook < 2:
            raise SidrecError(f"codebook must be >= 2, got {codebook}")
        if collision not in COLLISIONS:
            raise SidrecError(f"collision must be one of {', '.join(COLLISIONS)}, got '{collision}'")
        self.levels, self.codebook, self.seed, self.collision = levels, codebook, seed, collision

    # ----------------------------------------------------------- to implement
    def _fit(self, X: np.ndarray) -> None:
        """Learn `self.codebooks_` (list of (codebook, d_latent) arrays) and whatever `_latent` needs."""
        raise NotImplementedError

    def _latent(self, X: np.ndarray) -> np.ndarray:
        return X

    def _assign(self, Z: np.ndarray) -> np.ndarray:
        """Raw codes (n, levels): nearest code per level on the running residual."""
        codes = np.empty((len(Z), self.levels), dtype=np.int64)
        R = Z.astype(np.float32, copy=True)
        for level, C in enumerate(self.codebooks_):
            codes[:, level] = nearest(R, C)
            R -= C[codes[:, level]]
        return codes

    def reconstruct(self, codes: np.ndarray) -> np.ndarray:
        """The input-space vector a SID stands for (the decoder's output for the neural methods)."""
        return self._quantized(codes)

    def params(self) -> dict:
        return {"levels": self.levels, "codebook": self.codebook, "seed": self.seed, "collision": self.collision}

    def memory_estimate(self, n: int, d: int) -> int:
        """Bytes `fit` + `encode` allocate beyond X for n items of dimension d (an estimate, for the check before
        work starts): the float32 residuals, one float64 copy of them and two (n, K) float64 distance matrices."""
        return 4 * n * d + 8 * n * d + 2 * 8 * n * self.codebook

    def save(self, folder: str | Path) -> list[str]:
        """Write the fitted codebooks (and a subclass's weights); returns the file names written."""
        from sidrec.io import atomic_path

        with atomic_path(Path(folder) / "codebooks.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, **{f"level_{i}": C for i, C in enumerate(self.codebooks_)})
        return ["codebooks.npz"]

    # ----------------------------------------------------------- public
    def fit(self, X) -> "SIDEstimator":
        X = check_embeddings(X, self.codebook)
        self.check_size(*X.shape)
        t0 = time.perf_counter()
        self._fit(X)
        self.dim_ = X.shape[1]
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def check_size(self, n: int, d: int, loading: int = 0) -> None:
        """A one-line SidrecError, before any work, if n items do not fit the codebook's capacity (codebook^levels
        SIDs at fixed length) or n x d items need more memory than is available (`loading`: bytes still to read)."""
        if self.collision == "reassign" and self.codebook ** self.levels < n:
            raise SidrecError(f"{self.levels} levels x {self.codebook} codes give {self.codebook ** self.levels} SIDs "
                              f"for {n} items; raise sid.levels or sid.codebook (--levels/--codebook), or use "
                              f"sid.collision dedup-level")
        need, free = self.memory_estimate(n, d) + loading, available_memory()
        if free is not None and need > free:
            sample = f" or sid.{self.method.replace('-', '_')}.fit_sample" if hasattr(self, "fit_sample") else ""
            raise SidrecError(f"{n} items x {d} dims need about {_gib(need)} for {self.method} but only {_gib(free)} "
                              f"is available; free memory, use a machine with more, or lower sid.codebook{sample}")

    def _check_fitted(self, X) -> np.ndarray:
        if not hasattr(self, "codebooks_"):
            raise SidrecError(f"{type(self).__name__} is not fitted; call fit(X) first (or load_state(folder))")
        X = check_embeddings(X)
        if X.shape[1] != self.dim_:
            raise SidrecError(f"embeddings have dimension {X.shape[1]} but the model was fitted on {self.dim_}")
        return X

    def encode_raw(self, X) -> np.ndarray:
        """Codes before collision handling (n, levels)."""
        return self._assign(self._latent(self._check_fitted(X)))

    def encode(self, X) -> np.ndarray:
        """Collision-free codes: (n, levels) for 'reassign'; (n, levels + 1) with -1 padding for 'dedup-level'."""
        X = check_embeddings(X)
        raw = self.encode_raw(X)
        self.codes_raw_ = raw
        if self.collision == "dedup-level":
            return dedup_level(raw)
        return self.reassign(self._latent(X), raw)

    def fit_encode(self, X) -> np.ndarray:
        return self.fit(X).encode(X)

    # ----------------------------------------------------------- new items
    def load_state(self, folder: str | Path) -> "SIDEstimator":
        """Read back what `save` wrote (a missing file raises FileNotFoundError; `load_estimator` reports it)."""
        with np.load(Path(folder) / "codebooks.npz") as z:
            self.codebooks_ = [z[f"level_{i}"] for i in range(self.levels)]
        self.dim_ = int(self.codebooks_[0].shape[1])
        return self

    def _scores(self, R: np.ndarray, level: int) -> np.ndarray:
        """Cost of each code of `level` for residuals R (n, K): a new item takes the cheapest free one. The nearest
        code here; the balanced methods subtract their fitted cluster prices."""
        return sq_dists(R, self.codebooks_[level])

    def assign(self, X, taken=None) -> np.ndarray:
        """Full-length codes (n, levels) for new items that leave every SID in `taken` (an existing table, -1 pads) as
        it is; nothing is refitted.

        Each item gets its own cheapest code per level (`_scores`; no balancing across the batch, so an item's raw
        code does not depend on the other new items). An item whose SID is taken, by an existing item or by a new
        one placed before it (closest to its raw code first, as `reassign`), moves to the cheapest free code of its
        last level; if that bucket is full, to the cheapest higher-level code whose subtree has room. SIDs in
        `taken` count by their first `levels` codes, so a new SID is never the prefix of a dedup-level one.
        `assign_stats_` counts the moves.
        """
        Z = self._latent(self._check_fitted(X))
        L, K = self.levels, self.codebook
        used, count = set(), {}

        def occupy(sid):
            used.add(sid)
            for p in range(L):
                count[sid[:p]] = count.get(sid[:p], 0) + 1

        if taken is not None:
            T = np.asarray(taken, dtype=np.int64)
            if T.ndim != 2 or T.shape[1] < L or (T[:, :L] < 0).any():
                raise SidrecError(f"existing SIDs: expected {L} codes per item, got a table of shape {T.shape}")
            for sid in set(map(tuple, T[:, :L].tolist())):
                occupy(sid)
        existing = set(used)
        raw = np.empty((len(Z), L), dtype=np.int64)
        R = Z.astype(np.float32, copy=True)
        for level, C in enumerate(self.codebooks_):
            raw[:, level] = self._scores(R, level).argmin(1)
            R -= C[raw[:, level]]
        codes = raw.copy()
        stats = {"items": len(Z), "kept": 0, "moved_from_existing": 0, "moved_from_new": 0}
        for i in np.lexsort((np.arange(len(Z)), (R.astype(np.float64) ** 2).sum(1))):
            sid = tuple(raw[i].tolist())
            if sid in used:
                stats["moved_from_existing" if sid in existing else "moved_from_new"] += 1
                sid = self._nearest_free(Z[i].astype(np.float32), (), used, count)
                if sid is None:
                    raise SidrecError(f"all {K}^{L} SIDs of {L} levels x {K} codes are taken; no room for new items "
                                      f"at fixed length: rebuild with a larger codebook or more levels")
            else:
                stats["kept"] += 1
            occupy(sid)
            codes[i] = sid
        self.codes_raw_, self.assign_stats_ = raw, stats
        return codes

    def _nearest_free(self, r: np.ndarray, prefix: tuple, used: set, count: dict) -> tuple | None:
        """Depth-first over codes in `_scores` order, skipping subtrees without a free SID."""
        level = len(prefix)
        if level == self.levels:
            return None if prefix in used else prefix
        if count.get(prefix, 0) >= self.codebook ** (self.levels - level):
            return None
        C = self.codebooks_[level]
        for c in np.argsort(self._scores(r[None], level)[0], kind="stable").tolist():
            found = self._nearest_free(r - C[c], (*prefix, c), used, count)
            if found is not None:
                return found
        return None

    # ----------------------------------------------------------- residual geometry
    def _quantized(self, codes: np.ndarray) -> np.ndarray:
        out = np.zeros((len(codes), self.codebooks_[0].shape[1]), dtype=np.float32)
        for level, C in enumerate(self.codebooks_):
            out += C[codes[:, level]]
        return out

    def _level_dists(self, Z: np.ndarray, codes: np.ndarray, level: int) -> np.ndarray:
        """Distances of each item's residual at `level` (given its codes above) to every code of that level."""
        R = Z.astype(np.float32, copy=True)
        for j in range(level):
            R -= self.codebooks_[j][codes[:, j]]
        return sq_dists(R, self.codebooks_[level])

    def recon_error(self, X, codes: np.ndarray, chunk: int = 65536) -> float:
        """Squared reconstruction error relative to the data's variance (0 = perfect, 1 = as bad as the mean).
        In chunks, so a large catalogue needs no float64 copy of itself."""
        X, codes = np.asarray(X), np.asarray(codes)[:, : self.levels]
        mean = X.mean(0, dtype=np.float64)
        err = var = 0.0
        for a in range(0, len(X), chunk):
            x = X[a:a + chunk].astype(np.float64)
            err += ((x - self.reconstruct(codes[a:a + chunk]).astype(np.float64)) ** 2).sum()
            var += ((x - mean) ** 2).sum()
        return float(err / var)

    # ----------------------------------------------------------- collisions
    def reassign(self, Z: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Fixed-length resolution: colliding items move to the nearest free code of their last-level bucket.

        A bucket (items sharing the first L-1 codes) can hold at most `codebook` items. If one holds more, its
        excess items first move to the nearest level L-2 code whose bucket has room (same higher prefix), then
        get a fresh last-level code. If even that cannot make room, a SidrecError says to use dedup-level.
        """
        n, L = codes.shape
        K = self.codebook
        codes = codes.copy()
        if L >= 2:
            codes = self._fix_overflow(Z, codes)
        last = L - 1
        bucket = group_ids(codes[:, :last])
        full = bucket * K + codes[:, last]
        _, inv, cnt = np.unique(full, return_inverse=True, return_counts=True)
        involved = np.flatnonzero(np.isin(bucket, bucket[cnt[inv] > 1]))
        if len(involved) == 0:
            return codes
        D_all = np.empty((len(involved), K))  # a few matrix products, not one per bucket
        for a in range(0, len(involved), 65536):  # in chunks: no float64 copy of every involved residual at once
            part = involved[a:a + 65536]
            D_all[a:a + 65536] = self._level_dists(Z[part], codes[part], last)
        b_inv = bucket[involved]
        order = np.argsort(b_inv, kind="stable")  # the buckets' rows by one sort, not one scan per bucket
        for rows in np.split(order, np.flatnonzero(np.diff(b_inv[order])) + 1):
            idx, D = involved[rows], D_all[rows]
            cur = codes[idx, last]
            own = D[np.arange(len(idx)), cur]
            order = np.lexsort((own, cur))  # per code, the closest item first: it keeps the code
            keep = np.zeros(len(idx), dtype=bool)
            keep[order[np.r_[True, cur[order][1:] != cur[order][:-1]]]] = True
            free = np.ones(K, dtype=bool)
            free[cur] = False
            movers = np.flatnonzero(~keep)
            codes[idx[movers], last] = _greedy_match(D[movers], free)
        return codes

    def _fix_overflow(self, Z: np.ndarray, codes: np.ndarray) -> np.ndarray:
        n, L = codes.shape
        K, p = self.codebook, L - 2
        bucket = group_ids(codes[:, : L - 1])
        sizes = np.bincount(bucket)
        over = np.flatnonzero(sizes > K)
        if len(over) == 0:
            return codes
        members = _members(bucket)
        parent = group_ids(codes[:, :p])  # the moves below change codes p and L-1 only, never the parent prefix
        family = _members(parent)
        for b in over:
            idx = members(b)
            siblings = family(parent[idx[0]])
            room = K - np.bincount(codes[siblings, p], minlength=K)
            room[codes[idx[0], p]] = 0
            excess = len(idx) - K
            if np.maximum(room, 0).sum() < excess:
                prefix = "".join(f"<{chr(97 + j)}_{c}>" for j, c in enumerate(codes[idx[0], :p])) or "(root)"
                raise SidrecError(f"prefix {prefix} holds {len(siblings)} items, more than {K}x{K} SIDs can separate at "
                                  f"fixed length; use --collision dedup-level, or a larger codebook or more levels")
            D = self._level_dists(Z[idx], codes[idx], p)
            cost = D - D[np.arange(len(idx)), codes[idx, p]][:, None]
            cost[:, room <= 0] = np.inf
            moved = np.full(len(idx), -1)
            for flat in np.argsort(cost, axis=None, kind="stable"):
                i, c = divmod(int(flat), K)
                if moved[i] < 0 and room[c] > 0:
                    moved[i], room[c] = c, room[c] - 1
                    excess -= 1
                    if excess == 0:
                        break
            sel = np.flatnonzero(moved >= 0)
            codes[idx[sel], p] = moved[sel]
            codes[idx[sel], L - 1] = self._level_dists(Z[idx[sel]], codes[idx[sel]], L - 1).argmin(1)
        return codes


def _members(groups: np.ndarray):
    """`members(g)`: the rows of group g in ascending order, as np.flatnonzero(groups == g) but one sort for all."""
    order = np.argsort(groups, kind="stable")
    start = np.r_[0, np.cumsum(np.bincount(groups))]
    return lambda g: order[start[g]:start[g + 1]]


def _greedy_match(D: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Give each row a distinct free column, cheapest pairs first (m rows <= free columns).

    The greedy matching over all (row, column) pairs in order of (cost, row, column), computed in rounds: a pair that
    is both its row's cheapest free column and its column's cheapest unmatched row comes first among the pairs that
    could block it, so greedy takes it; each round takes all such pairs at once (at least the cheapest pair left)."""
    cols = np.flatnonzero(free)
    out = np.full(len(D), -1)
    rows_left, cols_left = np.arange(len(D)), np.arange(len(cols))
    sub = D[:, cols]
    while len(rows_left):
        S = sub[np.ix_(rows_left, cols_left)]
        best_col = S.argmin(1)  # the first minimum: the lowest column among equal costs, as the pair order has it
        mutual = S.argmin(0)[best_col] == np.arange(len(rows_left))  # ... and the lowest row
        out[rows_left[mutual]] = cols[cols_left[best_col[mutual]]]
        rows_left = rows_left[~mutual]
        cols_left = np.delete(cols_left, best_col[mutual])
    return out


def dedup_level(codes: np.ndarray) -> np.ndarray:
    """MiniOneRec's extra level: every member of a colliding group gets its rank in the group (by item id); others -1."""
    ids = group_ids(codes)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    start = np.r_[0, np.flatnonzero(sorted_ids[1:] != sorted_ids[:-1]) + 1]
    first = np.repeat(start, np.diff(np.r_[start, len(ids)]))
    rank = np.empty(len(ids), dtype=np.int64)
    rank[order] = np.arange(len(ids)) - first
    size = np.bincount(ids)[ids]
    extra = np.where(size > 1, rank, -1)
    return np.hstack([codes, extra[:, None]])
