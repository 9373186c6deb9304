"""Uncertainty of the figures sidrec reports: paired bootstrap of metric differences, and the interval of a lift.

Paired bootstrap (`paired_bootstrap`): two evaluations of the same rows give per-row scores a_i and b_i (HR@K and
NDCG@K of the exact target item, as in `sidrec.evaluate.metrics`). Rows are drawn with replacement `resamples`
times with a seeded generator; each draw gives mean(b) - mean(a) over the same drawn rows, and the 2.5 / 97.5
percentiles of those differences are the 95 % interval of the difference (likewise of mean(b) / mean(a) - 1).
Identical runs give [0, 0]; a run scoring every row c higher gives [c, c].

Lift interval (`lift_interval`): a lift is a ratio of two shares, (x1 / n1) / (x0 / n0) (rows with a pattern among
the failures over that among the successes). Its 95 % interval is Katz's log interval,
exp(log(lift) +- 1.96 * sqrt(1/x1 - 1/n1 + 1/x0 - 1/n0)); when x1 or x0 is 0, 0.5 is added to both counts and 1 to
both totals (Haldane's correction), so the bounds stay finite; with x1 = 0 (the lift is 0) the lower bound is 0.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from sidrec.errors import SidrecError

Z95 = 1.959963984540054  # the 97.5 % quantile of the standard normal
RESAMPLES = 2000
CHUNK = 256  # resamples drawn at once (memory: CHUNK x rows indices)


# ---------------------------------------------------------------------------------------------------- per-row scores
def row_scores(ranks: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row HR@k and NDCG@k from 0-based target ranks (-1: absent); their means are `metrics.hr_ndcg`."""
    ranks = np.asarray(ranks)
    within = (ranks >= 0) & (ranks < k)
    ndcg = np.where(within, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)
    return within.astype(np.float64), ndcg


def load_ranks(path: str | Path, sid_match: bool = False) -> dict[int, tuple]:
    """row -> (target, 0-based rank of the target, -1 when absent) of an evaluation's predictions.jsonl (a file or
    its folder): exact items, or with `sid_match` the SID columns of a generative evaluation (target_sid,
    predicted_sids: a hit when the SID matches, the paper's scoring)."""
    from sidrec.evaluate.harness import load_predictions

    path = Path(path)
    folder = path.parent if path.name == "predictions.jsonl" else path
    target_key, preds_key = ("target_sid", "predicted_sids") if sid_match else ("target", "predictions")
    out = {}
    for n, r in enumerate(load_predictions(folder), 1):
        if not isinstance(r, dict) or not {"row", target_key, preds_key} <= r.keys():
            raise SidrecError(f"{folder / 'predictions.jsonl'}:{n}: expected an object with row, {target_key} and "
                              f"{preds_key}")
        preds, target = r[preds_key], r[target_key]
        out[int(r["row"])] = (target, preds.index(target) if target in preds else -1)
    return out


def paired_ranks(a: dict, b: dict, names: Sequence[str] = ("a", "b")) -> tuple[np.ndarray, np.ndarray]:
    """The two runs' ranks over the same rows (row order); a SidrecError when the rows or targets differ."""
    if a.keys() != b.keys():
        raise SidrecError(f"{names[0]} and {names[1]} hold different rows ({len(a)} vs {len(b)}): not evaluations of "
                          f"the same split, so they cannot be paired")
    rows = sorted(a)
    bad = [r for r in rows if a[r][0] != b[r][0]]
    if bad:
        raise SidrecError(f"{names[0]} and {names[1]}: {len(bad)} rows have different targets (first: row {bad[0]}); "
                          f"not evaluations of the same dataset")
    return np.array([a[r][1] for r in rows]), np.array([b[r][1] for r in rows])


# ---------------------------------------------------------------------------------------------------- bootstrap
def paired_bootstrap(a: Sequence[float], b: Sequence[float], resamples: int = RESAMPLES, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Mean difference b - a of paired per-row scores, its bootstrap interval, and the relative change's."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"paired scores must be two equal-length, non-empty vectors, got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    ma, mb = np.empty(resamples), np.empty(resamples)
    for start in range(0, resamples, CHUNK):
        picks = rng.integers(0, len(a), (min(CHUNK, resamples - start), len(a)))
        ma[start:start + len(picks)] = a[picks].mean(1)
        mb[start:start + len(picks)] = b[picks].mean(1)
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    diff = mb - ma
    lo, hi = np.percentile(diff, q)
    out = {"a": float(a.mean()), "b": float(b.mean()), "diff": float(b.mean() - a.mean()),
           "ci": [float(lo), float(hi)], "level": level, "resamples": resamples, "seed": seed, "rows": len(a),
           "rel": None, "rel_ci": None}
    if a.mean() > 0:
        ok = ma > 0
        rlo, rhi = np.percentile(mb[ok] / ma[ok] - 1, q)
        out.update(rel=float(b.mean() / a.mean() - 1), rel_ci=[float(rlo), float(rhi)])
    return out


def compare_ranks(ref: np.ndarray, other: np.ndarray, metrics: Sequence[str], resamples: int = RESAMPLES,
                  seed: int = 0) -> dict[str, dict]:
    """`paired_bootstrap` of each metric ("HR@10", "NDCG@5", ...) between two runs' paired ranks."""
    out = {}
    for m in metrics:
        name, k = m.split("@")
        j = {"HR": 0, "NDCG": 1}[name]
        out[m] = paired_bootstrap(row_scores(ref, int(k))[j], row_scores(other, int(k))[j], resamples, seed)
    return out


# ---------------------------------------------------------------------------------------------------- lift
def lift_interval(x1: int, n1: int, x0: int, n0: int, z: float = Z95) -> tuple[float, float] | None:
    """Katz 95 % interval of (x1 / n1) / (x0 / n0) (module doc); None when a total is 0."""
    if n1 <= 0 or n0 <= 0:
        return None
    none_in_failures = x1 == 0
    if x1 == 0 or x0 == 0:
        x1, x0, n1, n0 = x1 + 0.5, x0 + 0.5, n1 + 1, n0 + 1
    log_lift = math.log((x1 / n1) / (x0 / n0))
    se = math.sqrt(max(1 / x1 - 1 / n1 + 1 / x0 - 1 / n0, 0.0))
    return 0.0 if none_in_failures else math.exp(log_lift - z * se), math.exp(log_lift + z * se)
