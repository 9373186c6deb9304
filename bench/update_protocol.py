"""The temporal protocol for `sidrec update`: a stale model, the same model updated on a later slice, and a full
retrain, on Industrial_and_Scientific (or any dataset), with wall times.

1. Cut the dataset's training rows (`sidrec data split-time`): OLD = the first `--fraction` of them (Industrial has
   no timestamps: the cut follows the rows' chronological order) with their items; SLICE = the later rows, with
   every item (the new ones last).
2. stale: embed OLD's items, build SIDs on them (S0), SFT on OLD.
3. update: embed SLICE's items, give the new ones SIDs from S0's codebooks (`sidrec sid assign`: S1), `run_update`
   the stale model on SLICE.
4. full retrain (today's way): build SIDs on every item, SFT from scratch on OLD's and SLICE's rows together.
5. Evaluate the three on the test split (constrained beam search, exact items): all rows; rows on old items only;
   rows whose target is a new item. The stale model knows no new item: its rows that hold one count as misses.

Writes bench/out/update_protocol[-quick].json (HR/NDCG@10 per subset, seconds per step) and prints a table.

    .venv/bin/python bench/update_protocol.py [--data DIR] [--fraction 0.75]   # configs/cpu.yaml models: hours on CPU
    .venv/bin/python bench/update_protocol.py --quick    # configs/smoke.yaml sizes, 0.05 epochs, 200 test
                                                         # rows: minutes; checks that the protocol runs, no result
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pandas as pd

from _common import OUT, ROOT, default_data, machine
from sidrec.config import load_config, read_yaml
from sidrec.data import Dataset
from sidrec.evaluate.metrics import hr_ndcg, target_ranks
from sidrec.sid.config import EmbedConfig, SidConfig
from sidrec.train.config import SftConfig, UpdateConfig


def timed(seconds: dict, name: str, fn, *args, **kw):
    t0 = time.perf_counter()
    result = fn(*args, **kw)
    seconds[name] = round(time.perf_counter() - t0, 1)
    print(f"{name}: {seconds[name]} s", flush=True)
    return result


def canonical(data: Path, out: Path) -> Path:
    if (data / "items.parquet").exists():
        return data
    from sidrec.data.minionerec import import_minionerec

    if not (out / "manifest.json").exists():
        import_minionerec(data, out)
    return out


def build(sid: SidConfig, emb: Path, data: Path, out: Path) -> None:
    from sidrec.sid.build import build_sids

    build_sids(sid.method, emb, data, out, levels=sid.levels, codebook=sid.codebook, seed=sid.seed,
               collision=sid.collision, threads=sid.threads, **sid.method_params())


def ranks(model: Path, data: Path, sids: Path, out: Path, beams: int, rows: int, cutoff_len: int) -> np.ndarray:
    from sidrec.evaluate.generative import evaluate_generative

    evaluate_generative(model, data, sids, out, split="test", beams=beams, max_rows=rows, cutoff_len=cutoff_len)
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return target_ranks([r["predictions"] for r in lines], [r["target"] for r in lines])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=None, help="MiniOneRec folder or canonical dataset")
    p.add_argument("--fraction", type=float, default=0.75, help="share of the training rows before the cut")
    p.add_argument("--config", type=Path, default=None, help="embed/sid/sft sections (default: configs/cpu.yaml)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    config = a.config or ROOT / "configs" / ("smoke.yaml" if a.quick else "cpu.yaml")
    out = a.out or OUT / ("update_protocol-quick" if a.quick else "update_protocol")
    out.mkdir(parents=True, exist_ok=True)
    embed_cfg = load_config(EmbedConfig, config, section="embed")
    sid_cfg = load_config(SidConfig, config, section="sid")
    sft_cfg = load_config(SftConfig, config, ["sft.epochs=0.05"] if a.quick else [], section="sft")
    update_cfg = load_config(UpdateConfig, config if "update" in read_yaml(config) else None,
                             ["update.epochs=0.05", "update.learning_rate=0.005"] if a.quick else [], section="update")
    beams, rows = (20, 200) if a.quick else (20, None)

    from sidrec.data.temporal import split_time_folders
    from sidrec.embed import embed_items
    from sidrec.sid import assign_sids
    from sidrec.train.sft import run_sft
    from sidrec.train.update import run_update

    for run in ("stale", "updated", "retrain", "full"):  # fresh runs (a run folder's checkpoints would resume)
        shutil.rmtree(out / run, ignore_errors=True)
    sec: dict[str, float] = {}
    full = canonical(Path(a.data) if a.data else default_data(), out / "dataset")
    old, new = out / "old", out / "slice"
    summary = timed(sec, "split", split_time_folders, full, old, new, fraction=a.fraction)
    embed = embed_cfg.model_dump()
    timed(sec, "embed_old", embed_items, old, out / "old.npy", **embed)
    timed(sec, "embed_all", embed_items, new, out / "all.npy", **embed)
    timed(sec, "sid_build_old", build, sid_cfg, out / "old.npy", old, out / "s0")
    timed(sec, "sft_stale", run_sft, sft_cfg, old, out / "s0", out / "stale")
    timed(sec, "sid_assign_new", assign_sids, out / "s0", out / "all.npy", out / "s1", data=new)
    timed(sec, "update", run_update, update_cfg, out / "stale" / "model", new, out / "s1", out / "updated")

    d_old, d_new = Dataset.load(old), Dataset.load(new)
    retrain = out / "retrain"
    if not (retrain / "manifest.json").exists():
        rows_all = pd.concat([d_old.splits["train"], d_new.splits["train"]], ignore_index=True)
        Dataset.from_frames(d_new.items, {**d_new.splits, "train": rows_all}, users=d_new.users,
                            meta=d_new.meta).save(retrain)
    timed(sec, "sid_build_all", build, sid_cfg, out / "all.npy", retrain, out / "s-all")
    timed(sec, "sft_full_retrain", run_sft, sft_cfg, retrain, out / "s-all", out / "full")

    test = d_new.splits["test"].iloc[:rows] if rows else d_new.splits["test"]
    n_old = d_old.num_items
    on_old = np.array([max(h) < n_old and t < n_old for h, t in zip(test["history"], test["target"])])
    to_new = test["target"].to_numpy() >= n_old
    cutoff = sft_cfg.cutoff_len
    r_stale = np.full(len(test), -1)
    r_stale[on_old] = ranks(out / "stale" / "model", old, out / "s0", out / "eval-stale", beams, int(on_old.sum()),
                            cutoff)
    r_update = ranks(out / "updated" / "model", new, out / "s1", out / "eval-updated", beams, rows, cutoff)
    r_full = ranks(out / "full" / "model", retrain, out / "s-all", out / "eval-full", beams, rows, cutoff)

    subsets = {"all": np.ones(len(test), bool), "old_items_only": on_old, "new_item_target": to_new}
    results = {name: {s: {"rows": int(m.sum()), **{k: round(v, 4) for k, v in hr_ndcg(r[m], (10,)).items()}}
                      for s, m in subsets.items() if m.any()}
               for name, r in (("stale", r_stale), ("update", r_update), ("full_retrain", r_full))}
    report = {"data": str(full), "fraction": a.fraction, "split": summary, "quick": a.quick, "config": str(config),
              "update": update_cfg.model_dump(), "seconds": sec, "results": results, "machine": machine()}
    (out.parent / f"{out.name}.json").write_text(json.dumps(report, indent=2))
    print("| model | subset | rows | HR@10 | NDCG@10 |\n|---|---|---|---|---|")
    for name, by in results.items():
        for s, m in by.items():
            print(f"| {name} | {s} | {m['rows']} | {m['HR@10']:.4f} | {m['NDCG@10']:.4f} |")
    print(f"wall seconds: stale SFT {sec['sft_stale']}, update {sec['sid_assign_new'] + sec['update']:.1f} "
          f"(assign + train), full retrain {sec['sid_build_all'] + sec['sft_full_retrain']:.1f} (build + train)")


if __name__ == "__main__":
    sys.exit(main())
