"""A/B replay: the whole test split through `sidrec serve` with two variants, `sidrec ab-report`, and an offline check.

1. Starts `sidrec serve --variant A=... --variant B=... --split 50/50` on 127.0.0.1 with a fresh impression log.
2. Replays every test row over HTTP (user_id = the row's user, history = its history, k = 10) at concurrency 32.
3. Stops the service and runs `sidrec ab-report` on the log (subprocess, JSON + table).
4. Offline: loads each variant as a `Recommender` and ranks exactly the rows that the router sends to it; its HR@10
   and NDCG@10 must equal the report's (max abs difference <= 0.001), and the rows the service logged per variant
   must be those rows.
5. The split share: rows and users per variant (within 2 points of 50/50 on the whole split; on the first N rows,
   within 3 binomial standard errors of its users, as a fair split of few users strays further).

    .venv/bin/python bench/ab_replay.py --a runs/demo/sft/model --b runs/demo/rl/model --sids runs/demo/sid \
        --data runs/demo/dataset                              # 4,533 rows
    .venv/bin/python bench/ab_replay.py --quick               # the fixture's SFT (A) and RL (B) models, 300 rows

Writes bench/out/ab_replay.json (and bench/out/ab_replay/: impressions.sqlite, ab_report.json, serve.log).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import OUT, SERVE, Server, fire, fixture, machine, summarize, test_bodies
from sidrec.data import Dataset
from sidrec.evaluate.metrics import hr_ndcg, target_ranks
from sidrec.io import write_json
from sidrec.serve import Recommender
from sidrec.serve.ab import DEFAULT_SALT, Router, parse_split

TOLERANCE = 0.001
SHARE_TOLERANCE = 0.02


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", default=None, help="variant A's model folder (default: the fixture's SFT model)")
    ap.add_argument("--b", default=None, help="variant B's model folder (default: the fixture's RL model)")
    ap.add_argument("--sids", default=None, help="SIDs of both models (default: the fixture's)")
    ap.add_argument("--data", default=None, help="canonical dataset (default: the fixture's)")
    ap.add_argument("--quick", action="store_true", help="the first 300 test rows")
    ap.add_argument("--split", default="50/50")
    ap.add_argument("--salt", default=DEFAULT_SALT)
    ap.add_argument("--rows", type=int, default=None, help="first N test rows only (default: all)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", default=str(OUT / "ab_replay"))
    ap.add_argument("--out", default=str(OUT / "ab_replay.json"))
    args = ap.parse_args()
    if args.quick and args.rows is None:
        args.rows = 300
    if not (args.a and args.b and args.sids and args.data):
        fx = fixture()
        args.a, args.b = str(args.a or fx["sft"]), str(args.b or fx["rl"])
        args.sids, args.data = str(args.sids or fx["sids"]), str(args.data or fx["data"])
    torch.set_num_threads(args.threads)
    wall0 = time.time()

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "impressions.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{log}{suffix}").unlink(missing_ok=True)
    bodies = test_bodies(args.data, k=args.k)[: args.rows]
    variants = {"A": args.a, "B": args.b}

    # 1-3: serve, replay, report
    serve_args = [a for name, model in variants.items() for a in ("--variant", f"{name}={model}@{args.sids}")]
    serve_args += ["--split", args.split, "--salt", args.salt, "--data", args.data, "--log", str(log)]
    t0 = time.time()
    with Server(serve_args, threads=args.threads, log_file=work / "serve.log") as url:
        load_s = time.time() - t0
        got = asyncio.run(fire(url, bodies, args.concurrency))
    replay = summarize(got["latencies"], got["statuses"], got["wall"])
    print(f"replayed {len(bodies)} rows in {got['wall']:.0f} s ({replay['requests_per_s']:.1f}/s), "
          f"{replay['errors']} errors", flush=True)
    report_path = work / "ab_report.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-c", SERVE, "ab-report", "--log", str(log), "--data", args.data, "--split", "test",
           "--k", str(args.k), "--out", str(report_path)]
    subprocess.run(cmd, check=True, env=env)
    report = json.loads(report_path.read_text())

    # 4: offline, on exactly the rows routed to each variant
    router = Router(list(variants), parse_split(args.split, len(variants)), salt=args.salt)
    test = Dataset.load(args.data).splits["test"].iloc[: len(bodies)]
    targets = test["target"].tolist()
    routed = {name: [i for i, b in enumerate(bodies) if router.route(b["user_id"]) == name] for name in variants}
    served = {name: [] for name in variants}
    for i, res in enumerate(got["responses"]):
        if res is not None:
            served[res["variant"]].append(i)
    offline, diffs = {}, []
    for name, model in variants.items():
        t1 = time.time()
        rec = Recommender.load(model, args.sids, args.data, beams=50)
        rows = routed[name]
        recs = rec.recommend([bodies[i]["history"] for i in rows], k=args.k)
        ranks = target_ranks([[r.item_id for r in row] for row in recs], [targets[i] for i in rows])
        m = hr_ndcg(ranks, ks=(args.k,))
        served_lists = {i: [it["item_id"] for it in got["responses"][i]["items"]] for i in served[name]}
        same = [served_lists.get(i) == [r.item_id for r in row] for i, row in zip(rows, recs)]
        v = report["variants"].get(name, {})
        d_hr = abs(m[f"HR@{args.k}"] - v.get(f"HR@{args.k}", float("nan")))
        d_ndcg = abs(m[f"NDCG@{args.k}"] - v.get(f"NDCG@{args.k}", float("nan")))
        diffs += [d_hr, d_ndcg]
        offline[name] = {"model": model, "rows": len(rows), f"HR@{args.k}": m[f"HR@{args.k}"],
                         f"NDCG@{args.k}": m[f"NDCG@{args.k}"], "report_rows": v.get("rows"),
                         f"report_HR@{args.k}": v.get(f"HR@{args.k}"), f"report_NDCG@{args.k}": v.get(f"NDCG@{args.k}"),
                         f"abs_diff_HR@{args.k}": d_hr, f"abs_diff_NDCG@{args.k}": d_ndcg,
                         "served_rows_are_routed_rows": sorted(served[name]) == rows,
                         "same_list_as_served": float(np.mean(same)) if same else None,
                         "seconds": time.time() - t1}
        print(f"{name}: offline HR@{args.k} {m[f'HR@{args.k}']:.4f} over {len(rows)} rows, report "
              f"{v.get(f'HR@{args.k}')}, same lists {offline[name]['same_list_as_served']:.4f}", flush=True)

    # 5: split share
    users = {name: {bodies[i]["user_id"] for i in rows} for name, rows in routed.items()}
    n_users = sum(len(u) for u in users.values())
    share = {name: {"rows": len(routed[name]) / len(bodies), "users": len(users[name]) / n_users} for name in variants}
    max_diff = float(np.nanmax(diffs))
    share_dev = max(abs(s["rows"] - 0.5) for s in share.values())
    # 2 points on the whole split; on a sample, 3 binomial standard errors of a fair split of its users
    share_tol = SHARE_TOLERANCE if args.rows is None else max(SHARE_TOLERANCE, 1.5 / np.sqrt(n_users))
    out = {"variants": variants, "sids": args.sids, "data": args.data, "split": args.split, "salt": args.salt,
           "rows": len(bodies), "k": args.k, "concurrency": args.concurrency, "threads": args.threads,
           "server_load_seconds": load_s, "replay": replay, "report": str(report_path),
           "report_matched": report["matched"], "report_unmatched": report["unmatched"],
           "report_variants": report["variants"], "report_differences": report["differences"], "offline": offline,
           "max_abs_diff": max_diff, "tolerance": TOLERANCE, "within_tolerance": bool(max_diff <= TOLERANCE),
           "share": share, "share_deviation_rows": share_dev, "share_tolerance": share_tol,
           "share_within_tolerance": bool(share_dev <= share_tol),
           "machine": machine(), "wall_seconds": time.time() - wall0}
    write_json(args.out, out)
    print(f"max |report - offline| = {max_diff:.6f} (<= {TOLERANCE}: {out['within_tolerance']}); row share "
          + ", ".join(f"{n} {s['rows']:.2%}" for n, s in share.items())
          + f" (within {share_tol:.1%} of 50/50: {out['share_within_tolerance']}); {out['wall_seconds']:.0f} s; "
          f"written to {args.out}")
    if not (out["within_tolerance"] and out["share_within_tolerance"] and replay["errors"] == 0):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
