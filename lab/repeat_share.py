"""How often does a model recommend what the user already has? Read from saved predictions, no model needed.

For each evaluation folder (`sidrec eval --out`, its predictions.jsonl): the share of top-10 items that are in the row's history, the
share of rows whose target is in its history, HR@10 / NDCG@10 as saved, and the same with history items dropped
from each ranking (what a hard "no repeats" filter would give).

    .venv/bin/python lab/repeat_share.py --data runs/demo/dataset --split test runs/demo/eval runs/at/T7G32/eval
"""

from __future__ import annotations

import numpy as np

from sidrec.data import Dataset
from sidrec.evaluate.metrics import hr_ndcg, target_ranks

from row_groups import eval_folder_args, split_predictions  # lab/ is on sys.path when this script runs


def main() -> None:
    args = eval_folder_args(__doc__, "evaluation folders of the same split")
    rows = Dataset.load(args.data).splits[args.split]
    histories = [set(h) for h in rows["history"]]
    print(f"{args.split}: {len(rows)} rows; target in its history: "
          f"{np.mean([t in h for t, h in zip(rows['target'], histories)]):.1%}")
    for path in args.evals:
        records = split_predictions(path, len(rows), args.split)
        seen = [histories[r["row"]] for r in records]
        repeats = np.mean([np.mean([i in h for i in r["predictions"][:10]]) for r, h in zip(records, seen)])
        targets = [r["target"] for r in records]
        kept = hr_ndcg(target_ranks([r["predictions"] for r in records], targets), ks=(10,))
        dropped = hr_ndcg(target_ranks([[i for i in r["predictions"] if i not in h] for r, h in zip(records, seen)],
                                       targets), ks=(10,))
        print(f"{path}: top-10 items in the history {repeats:.1%}; HR@10 / NDCG@10 {kept['HR@10']:.4f} / "
              f"{kept['NDCG@10']:.4f}; with history items dropped {dropped['HR@10']:.4f} / {dropped['NDCG@10']:.4f}")


if __name__ == "__main__":
    main()
