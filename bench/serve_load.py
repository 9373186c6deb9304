"""Load test of `sidrec serve`: latency and throughput with micro-batching (max batch 32) and without (max batch 1).

Starts one `sidrec serve` process per setting on 127.0.0.1 (free ports, 1 model thread each by default), warms each
up, then sends `--requests` POST /recommend requests to each at concurrency `--concurrency`, with histories (and
user ids) taken in order from the test split. The requests are sent in `--rounds` alternating rounds (batched,
unbatched, batched, ...), so that load from other processes on the machine falls on both settings alike. Every
request has a timeout and every phase a time limit; the servers are stopped at the end (SIGTERM, then SIGKILL).

    .venv/bin/python bench/serve_load.py --model runs/demo/sft/model --sids runs/demo/sid --data runs/demo/dataset
    .venv/bin/python bench/serve_load.py --quick      # the benchmark fixture's model, 200 requests per setting

Without --model/--sids/--data it measures the benchmark fixture (bench/_common.py: the smoke pipeline on the real
data, built once).

Reports per setting p50/p90/p99 latency (ms), requests/s (requests / wall time of its rounds), errors, and the
server's mean batch size; and the ratios batched/unbatched. Writes bench/out/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from _common import OUT, Server, fire, machine, model_args, summarize, test_bodies
from sidrec.io import write_json


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model folder (default: the benchmark fixture's SFT model)")
    ap.add_argument("--sids", default=None, help="SIDs of the model (default: the fixture's)")
    ap.add_argument("--data", default=None, help="canonical dataset (default: the fixture's)")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--quick", action="store_true", help="200 requests per setting in 2 rounds")
    ap.add_argument("--requests", type=int, default=2000, help="requests per setting")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds per setting")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--max-batch", type=int, nargs="+", default=[32, 1], help="settings to compare")
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1, help="model threads per server")
    ap.add_argument("--warmup", type=int, default=32)
    ap.add_argument("--out", default=str(OUT / "serve_load.json"))
    args = ap.parse_args()
    if args.quick:
        args.requests, args.rounds = 200, 2
    model_args(args)

    wall0 = time.time()
    bodies = test_bodies(args.data, k=args.k)
    requests = [bodies[i % len(bodies)] for i in range(args.requests)]
    tmp = Path(tempfile.mkdtemp(prefix="sidrec-serve-load-"))
    servers = {mb: Server(["--model", args.model, "--sids", args.sids, "--data", args.data, "--backend", args.backend,
                           "--max-batch", str(mb), "--max-wait-ms", str(args.max_wait_ms),
                           "--log", str(tmp / f"impressions-{mb}.sqlite")], threads=args.threads,
                          log_file=tmp / f"serve-{mb}.log")
               for mb in args.max_batch}
    results = {mb: {"latencies": [], "statuses": [], "wall": 0.0} for mb in args.max_batch}
    health = {}
    try:
        urls = {mb: s.__enter__() for mb, s in servers.items()}
        for mb, url in urls.items():
            asyncio.run(fire(url, bodies[-args.warmup:], args.concurrency))
        chunks = np.array_split(np.arange(len(requests)), args.rounds)
        for r, idx in enumerate(chunks):
            for mb, url in urls.items():
                got = asyncio.run(fire(url, [requests[i] for i in idx], args.concurrency))
                res = results[mb]
                res["latencies"] += got["latencies"]
                res["statuses"] += got["statuses"]
                res["wall"] += got["wall"]
                print(f"round {r + 1}/{args.rounds} max-batch {mb}: {len(idx)} requests in {got['wall']:.1f} s",
                      flush=True)
        for mb, url in urls.items():
            health[mb] = httpx.get(f"{url}/healthz", timeout=10).json()
    finally:
        for s in servers.values():
            s.stop()

    settings = {}
    for mb in args.max_batch:
        s = summarize(results[mb]["latencies"], results[mb]["statuses"], results[mb]["wall"])
        stats = health[mb]["batches"]["A"]
        s["server_batches"] = stats["batches"]
        s["mean_batch_size"] = stats["jobs"] / max(stats["batches"], 1)
        s["max_batch_seen"] = stats["max_batch_seen"]
        settings[f"max_batch_{mb}"] = s
    report = {"model": args.model, "sids": args.sids, "data": args.data, "backend": args.backend,
              "requests_per_setting": args.requests, "concurrency": args.concurrency, "rounds": args.rounds,
              "k": args.k, "max_wait_ms": args.max_wait_ms, "threads": args.threads, "warmup": args.warmup,
              "beams": 50, "impression_log": "on (SQLite WAL, synchronous=FULL, a temp file)",
              "machine": machine(),
              "settings": settings, "wall_seconds": time.time() - wall0}
    if len(args.max_batch) == 2:
        a, b = (settings[f"max_batch_{mb}"] for mb in args.max_batch)
        if a["requests_per_s"] and b["requests_per_s"]:
            report["throughput_ratio"] = a["requests_per_s"] / b["requests_per_s"]
        if a["p50_ms"] and b["p50_ms"]:
            report["p50_ratio"] = a["p50_ms"] / b["p50_ms"]
            report["p99_ratio"] = a["p99_ms"] / b["p99_ms"]
    write_json(args.out, report)
    print(f"| max batch | requests/s | p50 ms | p90 ms | p99 ms | errors | mean batch |")
    print(f"|---|---|---|---|---|---|---|")
    for name, s in settings.items():
        print(f"| {name.split('_')[-1]} | {s['requests_per_s']:.1f} | {s['p50_ms']:.0f} | {s['p90_ms']:.0f} | "
              f"{s['p99_ms']:.0f} | {s['errors']} | {s['mean_batch_size']:.1f} |")
    if "throughput_ratio" in report:
        print(f"throughput ratio {report['throughput_ratio']:.2f}x, p50 ratio {report['p50_ratio']:.2f}, "
              f"p99 ratio {report['p99_ratio']:.2f}; {report['wall_seconds']:.0f} s; written to {args.out}")
    print(json.dumps({k: v for k, v in report.items() if k != "settings"}, default=str)[:300])


if __name__ == "__main__":
    main()
