"""How many GRPO groups carry a learning signal? Rollout groups of an SFT model, scored under several reward mixes.

A group whose rewards are all equal gives every completion zero advantage, so GRPO learns nothing from it
(MiniOneRec: ~70% of groups). This script runs the constrained beam search (G beams) on a sample of training rows
and reports, per reward mix, the share of groups that contain the target and the share with zero advantage,
with and without `add_target`.

    .venv/bin/python lab/rl_groups.py --model runs/exp/e2/model --data runs/industrial \
        --sids bench/out/sid48/rqkmeans-constrained/run0 --rows 2000 --out bench/out/rl_groups.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from sidrec.data import Dataset
from sidrec.evaluate.generative import build_trie, load_model_for_inference, rank_histories
from sidrec.io import write_json
from sidrec.sid.io import load_sids
from sidrec.train.rewards import Groups, combine, zero_advantage_share

MIXES = {
    "rule": {"rule": 1.0},
    "rule+ranking (MiniOneRec)": {"rule": 1.0, "ranking": 1.0},
    "rule+ranking+prefix": {"rule": 1.0, "ranking": 1.0, "prefix": 0.5},
    "prefix": {"prefix": 1.0},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--sids", required=True)
    ap.add_argument("--split", default="train")
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--group", type=int, default=16)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default="bench/out/rl_groups.json")
    args = ap.parse_args()

    t0 = time.time()
    dataset = Dataset.load(args.data)
    codes, _ = load_sids(args.sids)
    tokenizer, model = load_model_for_inference(args.model)
    trie = build_trie(tokenizer, codes)
    df = dataset.splits[args.split]
    rows = np.sort(np.random.default_rng(args.seed).choice(len(df), min(args.rows, len(df)), replace=False))
    histories = [list(df["history"].iloc[r]) for r in rows]
    targets = np.asarray(df["target"].iloc[rows].tolist())
    sid_index, _ = rank_histories(model, tokenizer, trie, codes, histories, args.group, cutoff_len=128, batch_size=64)
    first_item = trie.first_items()
    sid_of_item = np.empty(len(codes), dtype=np.int64)
    for s, items in enumerate(trie.items_of_sid):
        sid_of_item[items] = s
    target_sid = sid_of_item[targets]
    in_group = (sid_index == target_sid[:, None]).any(axis=1)
    injected = sid_index.copy()
    injected[~in_group, -1] = target_sid[~in_group]

    report = {"model": args.model, "split": args.split, "rows": len(rows), "group_size": args.group,
              "target_in_group": float(in_group.mean()), "mixes": {}}
    for name, weights in MIXES.items():
        entry = {}
        for label, groups_index in (("beam", sid_index), ("beam+add_target", injected)):
            flat = groups_index.reshape(-1)
            g = Groups(trie.sids[flat], codes[np.repeat(targets, args.group)], first_item[flat],
                       [h for h in histories for _ in range(args.group)], args.group)
            total, _ = combine(g, weights)
            entry[label] = round(zero_advantage_share(total, args.group), 4)
        report["mixes"][name] = {"weights": weights, "zero_advantage_share": entry}
    report["seconds"] = round(time.time() - t0, 1)
    write_json(Path(args.out), report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
