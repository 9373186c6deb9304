"""The update step of bench/update_protocol.py again, with other update settings, on that run's artifacts (its stale
model, slice, assigned SIDs): each variant's valid and test HR/NDCG@10 overall and on rows whose target is a new item,
and its wall time. Settings are picked on valid; test is reported beside them.

    PYTHONPATH=src python lab/update_sweep.py --run bench/out/update_protocol --out OUT \
        --variant "lr1e-3:update.learning_rate=1e-3" --variant "e4:update.epochs=4;update.threads=1" [--config configs/cpu.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

from sidrec.config import load_config
from sidrec.data import Dataset
from sidrec.evaluate.generative import evaluate_generative
from sidrec.evaluate.metrics import hr_ndcg, target_ranks
from sidrec.train.config import UpdateConfig
from sidrec.train.update import run_update


def scores(model: Path, data: Path, sids: Path, out: Path, split: str, n_old: int, cutoff: int) -> dict:
    evaluate_generative(model, data, sids, out, split=split, beams=20, cutoff_len=cutoff)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    ranks = target_ranks([r["predictions"] for r in rows], [r["target"] for r in rows])
    new = np.array([r["target"] >= n_old for r in rows])
    share = float(np.mean([sum(p >= n_old for p in r["predictions"][:10]) for r in rows])) / 10
    return {"all": {"rows": len(rows), **hr_ndcg(ranks, (10,))},
            "new_item_target": {"rows": int(new.sum()), **hr_ndcg(ranks[new], (10,))},
            "new_item_share_of_top10": round(share, 4)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--run", type=Path, required=True, help="bench/update_protocol.py's --out folder")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--variant", action="append", required=True, help="NAME:key=value;key=value (update.* settings)")
    p.add_argument("--config", type=Path, default=None, help="a YAML with an update section (default: its defaults)")
    a = p.parse_args()
    run, n_old = a.run, Dataset.load(a.run / "old").num_items
    cutoff = json.loads((run / "stale" / "manifest.json").read_text())["config"]["cutoff_len"]
    a.out.mkdir(parents=True, exist_ok=True)
    for v in a.variant:
        name, _, sets = v.partition(":")
        cfg = load_config(UpdateConfig, a.config, [s for s in sets.split(";") if s], section="update")
        out = a.out / name
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        model = run_update(cfg, run / "stale" / "model", run / "slice", run / "s1", out / "train")
        seconds = round(time.perf_counter() - t0, 1)
        res = {"variant": name, "settings": cfg.model_dump(), "update_seconds": seconds,
               **{s: scores(model, run / "slice", run / "s1", out / f"eval-{s}", s, n_old, cutoff)
                  for s in ("valid", "test")}}
        (a.out / f"{name}.json").write_text(json.dumps(res, indent=2))
        print(json.dumps({k: res[k] for k in ("variant", "update_seconds", "valid", "test")}), flush=True)


if __name__ == "__main__":
    main()
