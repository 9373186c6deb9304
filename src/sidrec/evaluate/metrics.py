"""HR@K and NDCG@K for next-item prediction with one relevant item.

Binary relevance, one target per row, full-catalogue ranking: a row whose target sits at 0-based rank r contributes
HR@K = [r < K] and NDCG@K = [r < K] / log2(r + 2) (IDCG = 1). Rows whose target is absent score 0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

KS = (1, 3, 5, 10, 20, 50)


def target_ranks(predictions: Sequence[Sequence], targets: Sequence) -> np.ndarray:
    """0-based rank of each row's target in its ranked predictions, or -1 where it is absent."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} prediction rows but {len(targets)} targets")
    ranks = np.full(len(targets), -1, dtype=np.int64)
    for i, (preds, target) in enumerate(zip(predictions, targets)):
        for r, p in enumerate(preds):
            if p == target:
                ranks[i] = r
                break
    return ranks


def hr_ndcg(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """Mean HR@K and NDCG@K over rows, keys "HR@K"/"NDCG@K" in order of K."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise ValueError("cannot compute metrics over zero rows")
    hit_any = ranks >= 0
    gain = np.zeros(ranks.shape, dtype=np.float64)
    gain[hit_any] = 1.0 / np.log2(ranks[hit_any] + 2.0)
    out: dict[str, float] = {}
    for k in ks:
        within = hit_any & (ranks < k)
        out[f"HR@{k}"] = float(within.mean())
        out[f"NDCG@{k}"] = float(np.where(within, gain, 0.0).mean())
    return out
