"""Cold and short-history users: does a per-group fusion weight or a popularity prior help them? From a run's saved
beams only (RUN/eval: test beams, RUN/rerank/valid_beams: valid beams, RUN/scorer: the SASRec ensemble); no model.

Each variant ranks a row's beams by

    beam log-likelihood + λ_g · z(SASRec logit) + μ_g · log(1 + train count of the beam's item)

with (λ_g, μ_g) picked on VALID by NDCG@10 (exact items), separately for the rows of group g where the variant is
per-group. Baseline: the single λ of `sidrec rerank` (μ = 0, one λ for all rows, picked on valid). Test figures are
then paired-bootstrapped (`evaluate.stats.compare_ranks`, 2000 resamples) against the baseline, overall and per
group. Run from the folder that holds `runs/` (the scorer paths recorded in the run are relative to it):

    cd WORK && PYTHONPATH=REPO/src python REPO/lab/cold_rerank.py --run runs/demo [--out cold.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sidrec.data.canonical import Dataset
from sidrec.evaluate.fusion import GRID, ranked_items, row_groups, zscores
from sidrec.evaluate.metrics import hr_ndcg, target_ranks
from sidrec.evaluate.stats import compare_ranks
from sidrec.rerank import beam_logits, load_beams, load_checked_scorer
from sidrec.sid.io import load_sids
from sidrec.tasks.template import sid_text

MU_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
METRICS = ("HR@10", "NDCG@10")


def load(run: Path) -> tuple[Dataset, dict]:
    ds = Dataset.load(run / "dataset")
    codes, _ = load_sids(run / "sid")
    scorer, _ = load_checked_scorer(json.loads((run / "rerank" / "gains.json").read_text())["scorer"]["paths"], ds,
                                    codes)
    items_of_sid: dict[str, list[int]] = {}
    for item, c in enumerate(codes):
        items_of_sid.setdefault(sid_text(c), []).append(item)
    counts = np.log1p(ds.train_target_counts()).astype(np.float64)
    train_t, valid_t = ds.splits["train"]["target"].to_numpy(), ds.splits["valid"]["target"].to_numpy()
    window = len(valid_t)  # recency: the last `window` labelled interactions before the split (rows are in time order)
    recent = {"valid": train_t[-window:], "test": valid_t}
    splits = {}
    for name, folder in (("valid", run / "rerank" / "valid_beams"), ("test", run / "eval")):
        b = load_beams(folder, ds, items_of_sid)
        b["logits"] = beam_logits(scorer, b["histories"], b["first"], b["users"])
        b["z"] = zscores(np.where(np.isfinite(b["scores"]), b["logits"], 0.0), np.isfinite(b["scores"]))
        b["popularity"] = np.where(b["first"] >= 0, counts[np.maximum(b["first"], 0)], 0.0)
        r = np.log1p(np.bincount(recent[name], minlength=ds.num_items)).astype(np.float64)
        b["recency"] = np.where(b["first"] >= 0, r[np.maximum(b["first"], 0)], 0.0)
        b["groups"] = row_groups(ds, name, len(b["rows"]))
        splits[name] = b
    return ds, splits


def ranks(b: dict, lam: np.ndarray, mu: np.ndarray, rows: np.ndarray | None = None, prior: str = "popularity"
          ) -> np.ndarray:
    """0-based target ranks with per-row λ and μ (arrays over the rows), over `rows` (a mask) or all."""
    sel = np.ones(len(b["scores"]), bool) if rows is None else rows
    s = b["scores"][sel]
    fused = np.where(np.isfinite(s), s + lam[sel, None] * b["z"][sel] + mu[sel, None] * b[prior][sel], -np.inf)
    order = np.argsort(-fused, axis=1, kind="stable")
    items = ranked_items(order, [b["beam_items"][i] for i in np.flatnonzero(sel)])
    return np.asarray(target_ranks(items, [b["targets"][i] for i in np.flatnonzero(sel)]))


def pick(b: dict, rows: np.ndarray, mus=(0.0,), lams=GRID, prior: str = "popularity") -> tuple[float, float, float]:
    """(λ, μ, valid NDCG@10) with the best valid NDCG@10 over `rows`; ties: smallest μ, then smallest λ."""
    best = None
    n = len(b["scores"])
    for mu in sorted(mus):
        for lam in sorted(lams):
            m = hr_ndcg(ranks(b, np.full(n, lam), np.full(n, mu), rows, prior))["NDCG@10"]
            if best is None or m > best[2] + 1e-12:
                best = (lam, mu, m)
    return best


def variant(splits: dict, parts: dict[str, str], mus, prior: str = "popularity") -> tuple[dict, dict]:
    """Per part (a group name, or the rest): (λ, μ) picked on valid; the per-row arrays for each split."""
    v = splits["valid"]
    masks = {name: v["groups"][g] if g != "rest" else None for name, g in parts.items()}
    named = [m for m in masks.values() if m is not None]
    rest = ~np.any(named, axis=0) if named else np.ones(len(v["scores"]), bool)
    picked = {name: pick(v, rest if m is None else m, mus, prior=prior) for name, m in masks.items()}
    arrays = {}
    for split, b in splits.items():
        n = len(b["scores"])
        lam, mu = np.zeros(n), np.zeros(n)
        named = [b["groups"][g] for g in parts.values() if g != "rest"]
        rest = ~np.any(named, axis=0) if named else np.ones(n, bool)
        for name, g in parts.items():
            m = rest if g == "rest" else b["groups"][g]
            lam[m], mu[m] = picked[name][0], picked[name][1]
        arrays[split] = (lam, mu)
    return picked, arrays


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    ds, splits = load(args.run)
    for b in splits.values():  # the groups reported: cold rows, short histories and the others
        g = b["groups"]
        g["short (history <= 2)"] = g["history 1-2"]
        g["cold or short"] = g["user without a train row"] | g["history 1-2"]
        g["warm, history 3+"] = ~g["cold or short"]
    cold, short, either = "user without a train row", "short (history <= 2)", "cold or short"
    variants = {
        "single λ (current)": ({"all": "all"}, (0.0,)),
        "λ per cold/warm": ({"cold": cold, "rest": "rest"}, (0.0,)),
        "λ per short/longer": ({"short": short, "rest": "rest"}, (0.0,)),
        "λ per cold-or-short/rest": ({"cold|short": either, "rest": "rest"}, (0.0,)),
        "popularity μ (one λ, μ)": ({"all": "all"}, MU_GRID),
        "λ, μ per cold/warm": ({"cold": cold, "rest": "rest"}, MU_GRID),
        "λ, μ per cold-or-short/rest": ({"cold|short": either, "rest": "rest"}, MU_GRID),
        "recency μ (one λ, μ)": ({"all": "all"}, MU_GRID, "recency"),
        "recency λ, μ per cold/warm": ({"cold": cold, "rest": "rest"}, MU_GRID, "recency"),
        "recency λ, μ per cold-or-short/rest": ({"cold|short": either, "rest": "rest"}, MU_GRID, "recency"),
    }
    report_groups = ("all", cold, "user with a train row", short, "history 3-5", "history 6-10", "history 11-20",
                     "history 21+", either, "warm, history 3+")
    base, out = {}, {}
    for name, (parts, mus, *prior) in variants.items():
        prior = prior[0] if prior else "popularity"
        picked, arrays = variant(splits, parts, mus, prior)
        res = {"picked": {k: {"lambda": p[0], "mu": p[1], "valid_ndcg10": round(p[2], 5)} for k, p in picked.items()},
               "splits": {}}
        for split, b in splits.items():
            r = ranks(b, *arrays[split], prior=prior)
            if split not in base:
                base[split] = r
            res["splits"][split] = {}
            for g in report_groups:
                m = b["groups"][g]
                if not m.any():
                    continue
                cmp = compare_ranks(base[split][m], r[m], METRICS)
                res["splits"][split][g] = {"rows": int(m.sum()), **{
                    k: {"before": round(c["a"], 5), "after": round(c["b"], 5), "diff": round(c["diff"], 5),
                        "ci95": [round(x, 4) for x in c["ci"]]} for k, c in cmp.items()}}
        out[name] = res
        print(f"== {name}: picked on valid {res['picked']}")
        for g in (g for g in report_groups if g in res["splits"]["test"]):
            v, t = res["splits"]["valid"][g], res["splits"]["test"][g]
            print(f"  {g:<26} rows {v['rows']:>5}/{t['rows']:>5}  valid NDCG {v['NDCG@10']['before']:.4f}->"
                  f"{v['NDCG@10']['after']:.4f}  test HR {t['HR@10']['before']:.4f}->{t['HR@10']['after']:.4f} "
                  f"{t['HR@10']['ci95']}  NDCG {t['NDCG@10']['before']:.4f}->{t['NDCG@10']['after']:.4f} "
                  f"diff {t['NDCG@10']['diff']:+.4f} {t['NDCG@10']['ci95']}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
