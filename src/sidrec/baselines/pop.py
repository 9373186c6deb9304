"""Most-popular baseline: every user gets the same top-50 items by how often they are a train target."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from sidrec.data.canonical import Dataset
from sidrec.evaluate import write_evaluation
from sidrec.evaluate.harness import MAX_PREDICTIONS
from sidrec.io import write_manifest


def popularity_ranking(counts: np.ndarray, k: int = MAX_PREDICTIONS) -> list[int]:
    # Stable sort on -count: ties go to the lower item id, so the ranking is reproducible.
    return np.argsort(-counts, kind="stable")[:k].tolist()


def run_pop(data_dir: str | Path, out_dir: str | Path) -> dict:
    """Evaluate the popularity ranking on valid (`OUT/valid/`) and test (`OUT/`). Returns test results."""
    t0 = time.time()
    out = Path(out_dir)
    ds = Dataset.load(data_dir)
    top = popularity_ranking(ds.train_target_counts())
    info = {"model": "pop", "popularity": "train target counts"}
    results = {}
    for split, folder in (("valid", out / "valid"), ("test", out)):
        df = ds.splits[split]
        results[split] = write_evaluation(folder, split, df["target"].tolist(), [top] * len(df),
                                          users=df["user"].tolist(), num_items=ds.num_items, info=info)
    write_manifest(out, "baseline.pop", inputs={"data": data_dir}, seconds=time.time() - t0,
                   extra={"metrics": results["test"]["metrics"]})
    return results["test"]
