"""Which further signals help the hybrid re-ranking? From a run's saved beams only (RUN/eval: test beams,
RUN/rerank/valid_beams: valid beams, RUN/scorer: the SASRec ensemble); no model.

Every variant ranks a row's beams by a weighted sum of per-beam features; the weights are picked on VALID NDCG@10
(exact items) by coordinate ascent over a grid, separately for cold rows and the others (as `sidrec rerank --cold`).
Features:
  s      beam log-likelihood (weight 1)
  z      SASRec logit, z-scored within the row's beams (shipped)
  lsm    SASRec log-softmax over the whole catalogue (keeps the scorer's confidence across rows)
  rec    log(1 + the beam item's count among the last labelled interactions before the split) (shipped, cold prior)
  trans  log(1 + count of (last history item -> beam item) among the labelled rows before the split) (shipped since)
  seq    the same over each user's whole known sequence (every consecutive pair once per user)
  multi  seq from the last 3 history items, weighted 1, .5, .25
Test figures are paired-bootstrapped against the fusion before the transition prior (z + rec). Run from anywhere:

    PYTHONPATH=REPO/src python REPO/lab/rerank_signals.py --run RUN [--run RUN2 ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sidrec.data.canonical import Dataset
from sidrec.evaluate.fusion import (GRID, PRIOR_GRID, cold_rows, last_items, recency_prior, transition_counts,
                                    transition_prior, zscores)
from sidrec.evaluate.metrics import hr_ndcg, target_ranks
from sidrec.evaluate.stats import compare_ranks
from sidrec.rerank import load_beams, load_checked_scorer
from sidrec.sid.io import load_sids
from sidrec.tasks.template import sid_text

WIDE = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0)


def sequence_pairs(ds, split: str) -> dict:
    """(a -> b) counts over each user's item sequence known before `split` (the user's longest labelled row: its
    history, then its target), every consecutive pair once."""
    order = ("train", "valid", "test")
    seqs = {}
    for s in order[:order.index(split)]:
        df = ds.splits[s]
        for u, h, t in zip(df["user"], df["history"], df["target"]):
            seq = [int(x) for x in h] + [int(t)]
            if len(seq) > len(seqs.get(u, ())):
                seqs[u] = seq
    pairs = {}
    for seq in seqs.values():
        for a, b in zip(seq[:-1], seq[1:]):
            pairs[(a, b)] = pairs.get((a, b), 0) + 1
    return pairs


def load(run: Path) -> dict:
    ds = Dataset.load(run / "dataset")
    codes, _ = load_sids(run / "sid")
    paths = json.loads((run / "rerank" / "gains.json").read_text())["scorer"]["paths"]
    scorer, _ = load_checked_scorer(paths, ds, codes)
    items_of_sid: dict[str, list[int]] = {}
    for item, c in enumerate(codes):
        items_of_sid.setdefault(sid_text(c), []).append(item)
    out = {}
    for name, folder in (("valid", run / "rerank" / "valid_beams"), ("test", run / "eval")):
        b = load_beams(folder, ds, items_of_sid)
        ok = np.isfinite(b["scores"])
        first = np.maximum(b["first"], 0)
        full = np.concatenate([scorer.score([list(h) for h in b["histories"][i:i + 512]])
                               for i in range(0, len(b["histories"]), 512)]).astype(np.float64)
        top = full.max(1, keepdims=True)
        lsm = full - top - np.log(np.exp(full - top).sum(1, keepdims=True))
        logit = np.take_along_axis(full, first, 1)
        last = last_items(b["histories"]).tolist()
        trans = transition_prior(transition_counts(ds, name), np.array(last), b["first"])  # the product's
        sp = sequence_pairs(ds, name)
        seq1 = np.array([[np.log1p(sp.get((l, int(f)), 0)) for f in row] for l, row in zip(last, first)])
        multi = np.zeros_like(seq1)
        for j, decay in enumerate((1.0, 0.5, 0.25)):
            prev = [int(h[-1 - j]) if len(h) > j else -1 for h in b["histories"]]
            multi += decay * np.array([[np.log1p(sp.get((l, int(f)), 0)) for f in row] for l, row in zip(prev, first)])
        b["f"] = {"seq": np.where(ok, seq1, 0.0), "multi": np.where(ok, multi, 0.0),
                  "s": np.where(ok, b["scores"], 0.0), "z": zscores(np.where(ok, logit, 0.0), ok),
                  "lsm": np.where(ok, np.take_along_axis(lsm, first, 1), 0.0),
                  "rec": np.where(ok, recency_prior(ds, name)[first], 0.0), "trans": np.where(ok, trans, 0.0)}
        b["ok"], b["cold"] = ok, cold_rows(ds, name, len(b["rows"]))
        out[name] = b
    return out


def ranks(b, idx, weights: dict) -> np.ndarray:
    fused = b["f"]["s"][idx].copy()
    for k, w in weights.items():
        fused += w * b["f"][k][idx]
    fused = np.where(b["ok"][idx], fused, -np.inf)
    order = np.argsort(-fused, axis=1, kind="stable")
    ranked = [[it for j in row if j < len(b["beam_items"][i]) for it in b["beam_items"][i][j]][:50]
              for i, row in zip(idx, order.tolist())]
    return target_ranks(ranked, [b["targets"][i] for i in idx])


def fit(b, idx, feats: dict[str, tuple]) -> dict:
    """Coordinate ascent on valid NDCG@10 from all-zero weights, 3 sweeps."""
    w = {k: 0.0 for k in feats}
    best = hr_ndcg(ranks(b, idx, w))["NDCG@10"]
    for _ in range(3):
        moved = False
        for k, grid in feats.items():
            for g in grid:
                cand = {**w, k: g}
                m = hr_ndcg(ranks(b, idx, cand))["NDCG@10"]
                if m > best + 1e-12:
                    best, w, moved = m, cand, True
        if not moved:
            break
    return w


def variant(splits, feats) -> tuple[np.ndarray, np.ndarray, dict]:
    v, t = splits["valid"], splits["test"]
    picked = {}
    vr, tr = np.zeros(len(v["rows"])), np.zeros(len(t["rows"]))
    for part in ("cold", "others"):
        vi = np.flatnonzero(v["cold"] if part == "cold" else ~v["cold"])
        ti = np.flatnonzero(t["cold"] if part == "cold" else ~t["cold"])
        w = fit(v, vi, feats)
        picked[part] = w
        vr[vi], tr[ti] = ranks(v, vi, w), ranks(t, ti, w)
    return vr, tr, picked


TG = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 10.0)
VARIANTS = {
    "before: z+rec": {"z": GRID, "rec": PRIOR_GRID},
    "z+rec, wide λ": {"z": WIDE, "rec": PRIOR_GRID},
    "lsm+rec": {"lsm": (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0), "rec": PRIOR_GRID},
    "z+lsm+rec": {"z": WIDE, "lsm": (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0), "rec": PRIOR_GRID},
    "z+rec+trans": {"z": WIDE, "rec": PRIOR_GRID, "trans": TG},
    "z+rec+seq": {"z": WIDE, "rec": PRIOR_GRID, "seq": TG},
    "z+rec+multi": {"z": WIDE, "rec": PRIOR_GRID, "multi": TG},
    "z+rec+trans+multi": {"z": WIDE, "rec": PRIOR_GRID, "trans": TG, "multi": TG},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True)
    ap.add_argument("--out")
    args = ap.parse_args()
    report = {}
    for run in args.run:
        splits = load(Path(run))
        base = None
        for name, feats in VARIANTS.items():
            vr, tr, picked = variant(splits, feats)
            base = (vr, tr) if base is None else base
            cmp = compare_ranks(base[1], tr, ["NDCG@10", "HR@10"])
            row = {"valid": hr_ndcg(vr), "test": hr_ndcg(tr), "picked": picked,
                   "test_vs_before": {k: {"diff": cmp[k]["diff"], "ci": cmp[k]["ci"]} for k in cmp}}
            report.setdefault(run, {})[name] = row
            print(f"{run}  {name:18s} valid {row['valid']['HR@10']:.4f}/{row['valid']['NDCG@10']:.4f}  test "
                  f"{row['test']['HR@10']:.4f}/{row['test']['NDCG@10']:.4f}  dNDCG {cmp['NDCG@10']['diff']:+.4f} "
                  f"[{cmp['NDCG@10']['ci'][0]:+.4f}, {cmp['NDCG@10']['ci'][1]:+.4f}]  {picked}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
