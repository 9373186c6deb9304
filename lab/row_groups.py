"""Which rows does a model gain on? HR@10 / NDCG@10 per group of rows, from saved predictions (no model needed).

Groups, by what RL's `prompts: after_train` prompts can teach about the row's history:
- `after_train`: the history is the user's end-of-training history, i.e. an RL prompt itself;
- `later, train user`: the user has training rows, and the history ends with items after the training period (what
  `rl.extend_prompts` imitates);
- `no train row`: the user has no training row at all: a short history of recent items (what `rl.suffix_prompts`
  imitates).
The first folder is the reference the others are compared with.

    .venv/bin/python lab/row_groups.py --data runs/demo/dataset --split test runs/demo/eval runs/at/T7G32/eval
"""

from __future__ import annotations

import argparse

import numpy as np

from sidrec.data import Dataset
from sidrec.data.canonical import histories_after
from sidrec.evaluate.harness import load_predictions
from sidrec.evaluate.metrics import hr_ndcg, target_ranks


def row_groups(dataset: Dataset, split: str) -> dict[str, np.ndarray]:
    rows, train = dataset.splits[split], dataset.splits["train"]
    end = histories_after(train, dataset.max_history)
    ends = {(u, tuple(h)) for u, h in zip(end["user"], end["history"])}
    after = np.array([(u, tuple(h)) in ends for u, h in zip(rows["user"], rows["history"])])
    cold = ~rows["user"].isin(set(train["user"])).to_numpy()
    return {"all": np.ones(len(rows), bool), "after_train": after, "later, train user": ~after & ~cold,
            "no train row": cold}


def eval_folder_args(doc: str, evals_help: str) -> argparse.Namespace:
    """The command line of the scripts that read `sidrec eval` folders: the folders, `--data`, `--split`."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("evals", nargs="+", help=evals_help)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    return ap.parse_args()


def split_predictions(path: str, num_rows: int, split: str) -> list[dict]:
    """An evaluation folder's predictions in row order, one per row of the split, or an exit naming the mismatch."""
    records = sorted(load_predictions(path), key=lambda r: r["row"])
    if len(records) != num_rows:
        raise SystemExit(f"{path}: {len(records)} predictions for {num_rows} {split} rows")
    return records


def main() -> None:
    args = eval_folder_args(__doc__, "evaluation folders of the same split; the first is the reference")
    dataset = Dataset.load(args.data)
    groups = row_groups(dataset, args.split)
    metrics = {}
    for path in args.evals:
        records = split_predictions(path, len(groups["all"]), args.split)
        ranks = np.asarray(target_ranks([r["predictions"] for r in records], [r["target"] for r in records]))
        metrics[path] = {g: hr_ndcg(ranks[m].tolist(), ks=(10,)) for g, m in groups.items()}
    ref = metrics[args.evals[0]]
    for g, m in groups.items():
        print(f"{g} ({m.sum()} rows, {m.mean():.0%}): " + "; ".join(
            f"{path} {v[g]['HR@10']:.4f} / {v[g]['NDCG@10']:.4f}"
            + ("" if path == args.evals[0] else f" ({v[g]['HR@10'] / ref[g]['HR@10'] - 1:+.1%} / "
                                                 f"{v[g]['NDCG@10'] / ref[g]['NDCG@10'] - 1:+.1%})")
            for path, v in metrics.items()))


if __name__ == "__main__":
    main()
