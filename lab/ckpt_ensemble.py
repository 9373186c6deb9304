"""Checkpoint ensemble in the hybrid ranking: does the SFT model's log-likelihood of each RL beam help? From a
`make demo` run's saved beams (RUN/eval, RUN/rerank/valid_beams: the RL model; RUN/eval_sft: the SFT model on test;
the SFT model's valid beams are decoded here once, beam 50, into OUT/sft_valid).

    fused = RL beam log-likelihood + α · SFT log-likelihood of the beam's SID + λ · z(SASRec) + μ · recency prior

with (λ, μ) per part (cold rows / the others) as `rerank.cold` does, and α from a grid, all picked on VALID by NDCG@10.
A beam the SFT model did not keep in its own top 50 gets its row's lowest SFT score minus `--missing` (the SFT model
ranked it lower than that). Test is paired-bootstrapped against α = 0 (the shipped cold re-ranking).

    cd WORK && PYTHONPATH=REPO/src python REPO/lab/ckpt_ensemble.py --run runs/demo --out OUT
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cold_rerank import MU_GRID, load
from sidrec.evaluate.fusion import GRID, ranked_items
from sidrec.evaluate.metrics import hr_ndcg, target_ranks
from sidrec.evaluate.stats import compare_ranks

ALPHAS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5)


def sft_scores(b: dict, sft_eval: Path, missing: float) -> np.ndarray:
    rows = [json.loads(line) for line in (sft_eval / "predictions.jsonl").read_text().splitlines()]
    out = np.full(b["scores"].shape, -np.inf)
    for i, (rl, sft) in enumerate(zip(b["rows"], rows)):
        assert rl["row"] == sft["row"] == i
        have = dict(zip(sft["predicted_sids"], sft["scores"]))
        floor = min(sft["scores"]) - missing
        out[i, :len(rl["predicted_sids"])] = [have.get(s, floor) for s in rl["predicted_sids"]]
    return out


def ranks(b, alpha, lam, mu, rows=None):
    sel = np.ones(len(b["scores"]), bool) if rows is None else rows
    s = b["scores"][sel]
    fused = s + alpha * np.where(np.isfinite(s), b["sft"][sel], 0.0) + lam[sel, None] * b["z"][sel] \
        + mu[sel, None] * b["recency"][sel]
    fused = np.where(np.isfinite(s), fused, -np.inf)
    order = np.argsort(-fused, axis=1, kind="stable")
    idx = np.flatnonzero(sel)
    return np.asarray(target_ranks(ranked_items(order, [b["beam_items"][i] for i in idx]),
                                   [b["targets"][i] for i in idx]))


def pick(b, rows, alphas):
    n, best = len(b["scores"]), None
    for a in alphas:
        for mu in MU_GRID:
            for lam in GRID:
                m = hr_ndcg(ranks(b, a, np.full(n, lam), np.full(n, mu), rows))["NDCG@10"]
                if best is None or m > best[3] + 1e-12:
                    best = (a, lam, mu, m)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--missing", type=float, default=1.0)
    a = ap.parse_args()
    from sidrec.evaluate.generative import evaluate_generative

    sft_valid = a.out / "sft_valid"
    if not (sft_valid / "predictions.jsonl").exists():
        evaluate_generative(a.run / "sft" / "model", a.run / "dataset", a.run / "sid", sft_valid, split="valid",
                            beams=50, batch_size=64, cutoff_len=256)
    ds, splits = load(a.run)
    splits["valid"]["sft"] = sft_scores(splits["valid"], sft_valid, a.missing)
    splits["test"]["sft"] = sft_scores(splits["test"], a.run / "eval_sft", a.missing)
    cold = "user without a train row or history 1-2"
    report = {}
    for name, alphas in (("cold rerank (α = 0)", (0.0,)), ("+ SFT log-likelihood (α on valid)", ALPHAS)):
        v = splits["valid"]
        picked = {part: pick(v, m, alphas) for part, m in (("cold", v["groups"][cold]), ("others", ~v["groups"][cold]))}
        res = {"picked": {k: dict(zip(("alpha", "lambda", "mu", "valid_ndcg10"), p)) for k, p in picked.items()}}
        for split, b in splits.items():
            c = b["groups"][cold]
            alpha = np.where(c, picked["cold"][0], picked["others"][0])
            lam = np.where(c, picked["cold"][1], picked["others"][1])
            mu = np.where(c, picked["cold"][2], picked["others"][2])
            b.setdefault("ranks", {})[name] = ranks(b, alpha[:, None], lam, mu)
            res[split] = hr_ndcg(b["ranks"][name], (10,))
        report[name] = res
        print(name, json.dumps(res), flush=True)
    base, ens = report
    for split, b in splits.items():
        report[f"{split}: ensemble vs α = 0"] = compare_ranks(b["ranks"][base], b["ranks"][ens], ["HR@10", "NDCG@10"])
        print(split, {k: (round(v["diff"], 5), [round(x, 5) for x in v["ci"]])
                      for k, v in report[f"{split}: ensemble vs α = 0"].items()})
    (a.out / "ckpt_ensemble.json").write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
