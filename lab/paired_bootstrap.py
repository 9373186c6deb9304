"""Paired bootstrap of HR@K / NDCG@K between two evaluations of the same split: B against A, row by row.

A thin caller of `sidrec.evaluate.stats` (exact-item scores from predictions.jsonl, rows resampled together, seeded;
`--sid-match` scores by SID as earlier versions of this script did); `sidrec compare A B` reports the same intervals
for HR/NDCG@5,10,20 beside the other figures.

    .venv/bin/python lab/paired_bootstrap.py runs/demo/eval runs/at/N4/eval/predictions.jsonl
"""

from __future__ import annotations

import argparse

from sidrec.evaluate.stats import compare_ranks, load_ranks, paired_ranks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="evaluation folder or its predictions.jsonl (the reference)")
    ap.add_argument("b")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sid-match", action="store_true", help="score by SID match (target_sid / predicted_sids) "
                                                             "instead of exact items")
    args = ap.parse_args()
    a, b = paired_ranks(load_ranks(args.a, args.sid_match), load_ranks(args.b, args.sid_match), (args.a, args.b))
    for name, r in compare_ranks(a, b, [f"HR@{args.k}", f"NDCG@{args.k}"], args.resamples, args.seed).items():
        rel = "" if r["rel"] is None else f" ({r['rel']:+.1%}, 95% [{r['rel_ci'][0]:+.1%}, {r['rel_ci'][1]:+.1%}])"
        print(f"{name}: {r['a']:.4f} -> {r['b']:.4f}: {r['diff']:+.4f}, 95% paired bootstrap [{r['ci'][0]:+.4f}, "
              f"{r['ci'][1]:+.4f}]{rel}")


if __name__ == "__main__":
    main()
