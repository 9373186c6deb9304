"""How well does the `collaborative` reward's SASRec rank the rows RL trains on, against valid and test?

RL's collaborative reward scores completions of *training* rows. A SASRec trained on those rows ranks their targets far
better than any unseen row's (it has learnt them), so the reward mostly repeats the target instead of adding what
SASRec knows. Cross-fitted SASRecs (`sasrec.folds=K`, `sasrec.holdout_fold=k`, one per fold; `rl.scorer={k: ...}`)
score each training row with a model that never saw it. This prints HR/NDCG@10 over the full catalogue for each
teacher on a sample of training rows and on all valid and test rows.

    .venv/bin/python lab/rl_teacher.py --data runs/demo/dataset \
        --teacher 'full=bench/out/sasrec_run1,bench/out/sasrec_seed2,bench/out/sasrec_seed3' \
        --teacher 'crossfit=0:bench/out/sasrec_fold0_seed42,bench/out/sasrec_fold0_seed2,bench/out/sasrec_fold0_seed3;1:bench/out/sasrec_fold1_seed42,bench/out/sasrec_fold1_seed2,bench/out/sasrec_fold1_seed3'
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from sidrec.baselines.sasrec import load_scorer
from sidrec.data import Dataset
from sidrec.evaluate.metrics import hr_ndcg
from sidrec.io import write_json


def parse_teacher(spec: str):
    """NAME=a,b,c (averaged runs) or NAME=0:a,b;1:c,d (cross-fitted: fold -> runs)."""
    name, _, body = spec.partition("=")
    if ":" in body:
        return name, {int(k): v.split(",") for k, v in (part.split(":", 1) for part in body.split(";"))}
    runs = body.split(",")
    return name, runs if len(runs) > 1 else runs[0]


def target_rank(scorer, histories, targets, users, batch=512) -> np.ndarray:
    ranks = []
    for i in range(0, len(histories), batch):
        h, t = histories[i:i + batch], targets[i:i + batch]
        if getattr(scorer, "needs_users", False):  # score every item: candidates = the whole catalogue per row
            every = np.broadcast_to(np.arange(scorer.num_items), (len(h), scorer.num_items))
            s = scorer.score(h, every, users=users[i:i + batch])
        else:
            s = scorer.score(h)
        ranks.append((s > s[np.arange(len(t)), t][:, None]).sum(1))
    return np.concatenate(ranks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--teacher", action="append", required=True, help="NAME=runs (see the module docstring)")
    ap.add_argument("--train-rows", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/out/rl_teacher.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = Dataset.load(args.data)
    train = ds.splits["train"]
    pick = np.sort(np.random.default_rng(args.seed).choice(len(train), min(args.train_rows, len(train)), replace=False))
    splits = {f"train ({len(pick)} sampled rows)": train.iloc[pick], "valid": ds.splits["valid"],
              "test": ds.splits["test"]}
    result = {}
    for spec in args.teacher:
        name, runs = parse_teacher(spec)
        scorer = load_scorer(runs)
        for split, df in splits.items():
            ranks = target_rank(scorer, [list(h) for h in df["history"]], np.asarray(df["target"].tolist()),
                                df["user"].to_numpy())
            m = hr_ndcg(np.where(ranks < 10, ranks, -1), ks=(10,))
            result.setdefault(name, {})[split] = m
            print(f"{name:>10} {split:>28}: HR@10 {m['HR@10']:.4f}  NDCG@10 {m['NDCG@10']:.4f}  ({len(df)} rows)")
    write_json(args.out, {"args": vars(args), "teachers": result})


if __name__ == "__main__":
    main()
