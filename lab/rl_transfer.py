"""Where does an RL model gain or lose? NDCG@10 of the SFT model, each RL model and the collaborative tilt, on groups
of valid rows (or test rows, `--split test`).

Row groups:
- `after_train`: the row's history is the user's history at the end of the training period (on valid: the user's
  first valid row), exactly an `rl.prompts: after_train` prompt, so an RL run on those prompts has trained on it
  (without its target).
- `later`: every other row. Its history ends with items bought after the training period.
- `later, train user` / `no train row`: `later` split by whether the user has any training row (see
  lab/row_groups.py).
- `repeat` / `new`: the target's SID is / is not in the history.
- `target seen N..M`: the target's count among the training targets (popular items vs the tail).

The tilt re-ranks the SFT model's beams by  log pi_ref + lam * z(SASRec) + nu * [SID not in history]  (the optimum
that GRPO with rewards {collaborative: lam, novelty: nu} and beta = 1 aims at, see lab/rl_fusion_bound.py).

    .venv/bin/python lab/rl_transfer.py --sft runs/demo/sft/model --rl runs/at/C1/model --data runs/demo/dataset \
        --sids runs/demo/sid --scorer bench/out/sasrec_run1,bench/out/sasrec_seed2,bench/out/sasrec_seed3 \
        --out bench/out/rl_transfer.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from sidrec.baselines.sasrec import load_scorer
from sidrec.data import Dataset
from sidrec.evaluate.generative import build_trie, load_model_for_inference, rank_histories
from sidrec.evaluate.metrics import target_ranks
from sidrec.io import write_json
from sidrec.sid.io import load_sids
from sidrec.train.rewards import in_history

from rl_fusion_bound import beam_logits, tilt  # lab/ is on sys.path when this script runs
from row_groups import row_groups

COUNT_BINS = ((0, 5), (5, 20), (20, None))


def row_ndcg10(sid_index: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-row NDCG@10 (one relevant item): 1 / log2(rank + 2) inside the top 10, else 0."""
    ranks = target_ranks(sid_index.tolist(), targets.tolist())
    return np.where((ranks >= 0) & (ranks < 10), 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sft", required=True)
    ap.add_argument("--rl", required=True, help="RL model folder(s), joined by commas")
    ap.add_argument("--data", required=True)
    ap.add_argument("--sids", required=True)
    ap.add_argument("--scorer", required=True, help="SASRec run folder, or several joined by commas (averaged)")
    ap.add_argument("--lam", type=float, default=0.75)
    ap.add_argument("--nu", type=float, default=0.0)
    ap.add_argument("--beams", type=int, default=32)
    ap.add_argument("--split", choices=("valid", "test"), default="valid")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()

    dataset = Dataset.load(args.data)
    codes, _ = load_sids(args.sids)
    valid, train = dataset.splits[args.split], dataset.splits["train"]  # `valid`: the rows measured
    tokenizer, sft = load_model_for_inference(args.sft)
    trie = build_trie(tokenizer, codes)
    sid_of_item = trie.sid_of_item(dataset.num_items)
    first_item = trie.first_items()
    histories = [list(h) for h in valid["history"]]
    targets = sid_of_item[np.asarray(valid["target"].tolist())]

    repeat = in_history(targets[:, None], histories, sid_of_item)[:, 0]
    seen = np.bincount(np.asarray(train["target"].tolist()), minlength=dataset.num_items)[valid["target"].to_numpy()]
    groups = row_groups(dataset, args.split)
    groups.update({"later": ~groups["after_train"], "repeat": repeat, "new": ~repeat})
    for lo, hi in COUNT_BINS:
        groups[f"target seen {lo}..{hi - 1 if hi else ''}"] = (seen >= lo) & (seen < (hi or np.inf))

    sid_index, loglik = rank_histories(sft, tokenizer, trie, codes, histories, args.beams, batch_size=64,
                                       progress=False)
    scorer = load_scorer(args.scorer.split(","))
    logits = beam_logits(scorer, histories, sid_index, first_item)
    novel = ~in_history(sid_index, histories, sid_of_item)
    tilted = tilt(sid_index, loglik, logits, args.beams, args.lam, args.nu * novel)
    per_row = {"sft": row_ndcg10(sid_index, targets), "tilt": row_ndcg10(tilted, targets)}
    for path in args.rl.split(","):
        _, model = load_model_for_inference(path)
        per_row[path] = row_ndcg10(rank_histories(model, tokenizer, trie, codes, histories, args.beams,
                                                  batch_size=64, progress=False)[0], targets)

    table = {g: {"rows": int(m.sum()), **{k: float(v[m].mean()) for k, v in per_row.items()}}
             for g, m in groups.items()}
    print(f"{args.split} NDCG@10 by row group ({time.time() - t0:.0f} s); in brackets: vs SFT")
    for g, v in table.items():
        cells = "  ".join(f"{k} {x:.4f} ({x / max(v['sft'], 1e-12) - 1:+.1%})" for k, x in v.items()
                          if k not in ("rows", "sft"))
        print(f"{g:18s} {v['rows']:5d} rows  sft {v['sft']:.4f}  {cells}")
    write_json(args.out, {"args": vars(args), f"{args.split}_ndcg10": table})


if __name__ == "__main__":
    main()
