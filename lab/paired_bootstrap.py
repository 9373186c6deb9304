"""Paired bootstrap of HR@10 / NDCG@10 between two evaluations of the same split: B against A, row by row.

Rows are resampled with replacement (2,000 times by default, seeded); each resample gives B's mean over A's mean,
and the 2.5/97.5 percentiles are the interval of the relative change. Both files must be `sidrec eval`
predictions of the same rows.

    .venv/bin/python lab/paired_bootstrap.py runs/demo/eval/predictions.jsonl runs/at/N4/eval/predictions.jsonl
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from sidrec.errors import SidrecError


def per_row(path: str, k: int) -> dict[int, tuple[float, float]]:
    """row -> (HR@k, NDCG@k) of one predictions.jsonl."""
    out = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            top = r["predicted_sids"][:k]
            rank = top.index(r["target_sid"]) if r["target_sid"] in top else -1
            out[r["row"]] = (float(rank >= 0), 1.0 / np.log2(rank + 2) if rank >= 0 else 0.0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    a, b = per_row(args.a, args.k), per_row(args.b, args.k)
    if a.keys() != b.keys():
        raise SidrecError(f"{args.a} and {args.b} hold different rows ({len(a)} vs {len(b)}): not the same split")
    rows = sorted(a)
    x, y = np.array([a[r] for r in rows]), np.array([b[r] for r in rows])
    rng = np.random.default_rng(args.seed)
    picks = rng.integers(0, len(rows), (args.resamples, len(rows)))
    for j, name in enumerate((f"HR@{args.k}", f"NDCG@{args.k}")):
        ratio = y[picks, j].mean(1) / np.maximum(x[picks, j].mean(1), 1e-12) - 1
        lo, hi = np.percentile(ratio, [2.5, 97.5])
        print(f"{name}: {x[:, j].mean():.4f} -> {y[:, j].mean():.4f} ({y[:, j].mean() / x[:, j].mean() - 1:+.1%}), "
              f"95% paired bootstrap [{lo:+.1%}, {hi:+.1%}]")


if __name__ == "__main__":
    main()
