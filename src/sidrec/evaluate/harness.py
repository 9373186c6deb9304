"""The evaluation harness every model in sidrec reports through.

`write_evaluation` takes ranked item ids per row (best first) and writes, atomically, into `out`:

- `predictions.jsonl`: one line per row in split order, `{"row", "user", "target", "predictions", ...extras}`
- `results.json`: `{"split", "num_samples", "metrics": {"HR@1", "NDCG@1", ..., "HR@50", "NDCG@50"}, ...}`
  where `metrics` always scores exact items. SID models pass `sid_of_item` so that `metrics_sid_match`
  (a hit whenever the predicted SID equals the target's SID, the paper's way) is reported beside it.
- `manifest.json`
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sidrec.errors import SidrecError
from sidrec.evaluate.metrics import KS, hr_ndcg, target_ranks
from sidrec.io import read_json, write_json, write_jsonl, write_manifest

MAX_PREDICTIONS = 50


def _check_rows(predictions: Sequence[Sequence[int]], num_items: int | None) -> None:
    for i, preds in enumerate(predictions):
        if len(preds) > MAX_PREDICTIONS:
            raise ValueError(f"row {i}: {len(preds)} predictions; the harness keeps at most {MAX_PREDICTIONS}")
        if len(set(preds)) != len(preds):
            raise ValueError(f"row {i}: duplicate items in predictions {list(preds)}")
        if num_items is not None and any(not 0 <= p < num_items for p in preds):
            raise ValueError(f"row {i}: prediction outside the catalogue of {num_items} items")


def sid_match_ranks(predictions, targets, sid_of_item: Sequence) -> np.ndarray:
    """Ranks where a prediction counts as a hit when its SID equals the target's SID (the paper's scoring)."""
    pred_sids = [[sid_of_item[p] for p in preds] for preds in predictions]
    return target_ranks(pred_sids, [sid_of_item[t] for t in targets])


def write_evaluation(
    out: str | Path,
    split: str,
    targets: Sequence[int],
    predictions: Sequence[Sequence[int]],
    users: Sequence | None = None,
    row_extras: Sequence[dict] | None = None,
    sid_of_item: Sequence | None = None,
    num_items: int | None = None,
    info: dict[str, Any] | None = None,
    config: Any = None,
    seconds: float | None = None,
    ks: Sequence[int] = KS,
) -> dict:
    out = Path(out)
    targets = [int(t) for t in targets]
    predictions = [[int(p) for p in preds] for preds in predictions]
    if not targets:
        raise SidrecError(f"split '{split}' has no rows to evaluate")
    _check_rows(predictions, num_items)
    t0 = time.time()
    ranks = target_ranks(predictions, targets)
    results: dict[str, Any] = {"split": split, "num_samples": len(targets), "metrics": hr_ndcg(ranks, ks)}
    if sid_of_item is not None:
        results["metrics_sid_match"] = hr_ndcg(sid_match_ranks(predictions, targets, sid_of_item), ks)
    results.update(info or {})

    def rows():
        for i, (t, preds) in enumerate(zip(targets, predictions)):
            row = {"row": i}
            if users is not None:
                row["user"] = int(users[i]) if isinstance(users[i], (int, np.integer)) else users[i]
            row["target"] = t
            row["predictions"] = preds
            if row_extras is not None:
                row.update(row_extras[i])
            yield row

    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)
    write_jsonl(out / "predictions.jsonl", rows())
    write_json(out / "results.json", results)
    write_manifest(out, "eval", config=config, seconds=seconds if seconds is not None else time.time() - t0,
                   extra={"split": split})
    return results


def load_results(path: str | Path) -> dict:
    """Read results.json from a file or an evaluation folder."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.exists():
        raise SidrecError(f"{path}: no results.json; run an evaluation with --out pointing here first")
    return read_json(path)


def load_predictions(folder: str | Path) -> list[dict]:
    path = Path(folder) / "predictions.jsonl"
    if not path.exists():
        raise SidrecError(f"{path}: no predictions.jsonl in the evaluation folder")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise SidrecError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    return rows


def load_eval(eval_dir: str | Path) -> tuple[dict, list[dict], Path]:
    """results.json and predictions.jsonl of an evaluation folder, or a SidrecError saying what is missing."""
    eval_dir = Path(eval_dir)
    if not eval_dir.is_dir():
        raise SidrecError(f"{eval_dir}: evaluation folder does not exist (give the --out folder of `sidrec eval` "
                          f"or `sidrec baseline ...`)")
    res_path = eval_dir / "results.json"
    pred_path = eval_dir / "predictions.jsonl"
    missing = [p.name for p in (res_path, pred_path) if not p.exists()]
    if missing:
        raise SidrecError(f"{eval_dir}: no {' or '.join(missing)}; an evaluation folder holds results.json and "
                          f"predictions.jsonl (written by `sidrec eval` / `sidrec baseline`)")
    results = read_json(res_path)
    rows = []
    with open(pred_path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise SidrecError(f"{pred_path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or not {"row", "target", "predictions"} <= row.keys():
                raise SidrecError(f"{pred_path}:{n}: expected an object with row, target and predictions")
            rows.append(row)
    if not rows:
        raise SidrecError(f"{pred_path}: no rows")
    return results, rows, pred_path


def check_alignment(rows: list[dict], ds, split: str, pred_path: Path) -> None:
    """Every prediction row must point at a distinct split row of `ds` (a canonical `Dataset`) with the same target
    (and user, when given)."""
    df = ds.splits[split]
    targets = df["target"].tolist()
    users = df["user"].tolist()
    seen = set()
    bad = []
    for line, row in enumerate(rows, 1):
        i = row["row"]
        if not isinstance(i, int) or not 0 <= i < len(targets):
            raise SidrecError(f"{pred_path}:{line}: row {i!r} is not a row of split '{split}' (0..{len(targets) - 1});"
                              f" the predictions were made on another dataset or split")
        if i in seen:
            raise SidrecError(f"{pred_path}:{line}: row {i} appears twice")
        seen.add(i)
        if row["target"] != targets[i] or ("user" in row and row["user"] != users[i]):
            bad.append((line, i, row["target"], row.get("user"), targets[i], users[i]))
        for p in row["predictions"]:
            if not isinstance(p, int) or not 0 <= p < ds.num_items:
                raise SidrecError(f"{pred_path}:{line}: predicted item {p!r} is not in the catalogue of "
                                  f"{ds.num_items} items")
    if bad:
        line, i, got, got_user, want, want_user = bad[0]
        raise SidrecError(f"{pred_path}: {len(bad)} of {len(rows)} rows do not match split '{split}' of the dataset "
                          f"(first: line {line}, row {i} has target {got}, user {got_user}; the dataset has target "
                          f"{want}, user {want_user}); give the --data folder the model was evaluated on")
