"""SASRec on real Industrial_and_Scientific: train twice with one seed, check the bar and determinism.

    .venv/bin/python bench/sasrec_industrial.py [--data DIR] [--config configs/sasrec.yaml] [--set k=v ...]
    .venv/bin/python bench/sasrec_industrial.py --quick     # one run of 2 epochs: speed, not the bar

Bar (test split, 4,533 rows): HR@10 >= .1340, NDCG@10 >= .0900, each run <= 10 minutes, both runs equal to 4 decimals.
--data is a canonical dataset (default: the benchmark fixture's, the real data imported; bench/_common.py).
Writes bench/out/sasrec_industrial.json; run folders go to bench/out/sasrec_run{1,2}/.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from _common import OUT, ROOT, fixture, machine
from sidrec.baselines.sasrec import SasrecConfig, run_sasrec
from sidrec.config import load_config
from sidrec.io import write_json

BAR = {"HR@10": 0.1340, "NDCG@10": 0.0900}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="canonical dataset (default: the fixture's)")
    ap.add_argument("--quick", action="store_true", help="one run, at most 2 epochs (timing only; the bar is not checked)")
    ap.add_argument("--config", default=str(ROOT / "configs" / "sasrec.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    if args.quick:
        args.overrides = ["sasrec.max_epochs=2", *args.overrides]
    args.data = args.data or str(fixture()["data"])
    cfg = load_config(SasrecConfig, args.config, args.overrides, section="sasrec")
    out = Path(args.out)
    runs = []
    for i in ((1,) if args.quick else (1, 2)):
        load = os.getloadavg()[0]
        t0 = time.time()
        res = run_sasrec(args.data, out / ("sasrec_quick" if args.quick else f"sasrec_run{i}"), cfg)
        minutes = (time.time() - t0) / 60
        m = res["metrics"]
        runs.append({"run": i, "minutes": round(minutes, 2), "load_avg_1min_at_start": round(load, 2),
                     "load_avg_1min_at_end": round(os.getloadavg()[0], 2), "best_epoch": res["best_epoch"],
                     "epochs_run": res["epochs_run"], "stop_reason": res["stop_reason"],
                     "best_valid_NDCG@10": res["best_valid_NDCG@10"], "metrics": m})
        print(f"run {i}: HR@10 {m['HR@10']:.4f}  NDCG@10 {m['NDCG@10']:.4f}  {minutes:.2f} min  "
              f"(best epoch {res['best_epoch']}/{res['epochs_run']}, load {load:.1f})", flush=True)
    same = all(f"{a:.4f}" == f"{b:.4f}" for a, b in zip(runs[0]["metrics"].values(), runs[-1]["metrics"].values()))
    m = runs[0]["metrics"]
    passed = {"HR@10": m["HR@10"] >= BAR["HR@10"], "NDCG@10": m["NDCG@10"] >= BAR["NDCG@10"],
              "minutes": max(r["minutes"] for r in runs) <= 10.0, "deterministic_4dp": same and len(runs) == 2}
    report = {"bench": "sasrec_industrial", "data": args.data, "num_test": res["num_samples"],
              "config": cfg.model_dump(), "bar": BAR, "runs": runs, "quick": args.quick,
              "passed": None if args.quick else passed, "all_passed": None if args.quick else all(passed.values()),
              "machine": machine(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(out / "sasrec_industrial.json", report)
    print(json.dumps({"passed": report["passed"], "all_passed": report["all_passed"]}))


if __name__ == "__main__":
    main()
