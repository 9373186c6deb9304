"""Load test of `sidrec serve`: latency and throughput with micro-batching (max batch 32) and without (max batch 1).

Starts one `sidrec serve` process per setting on 127.0.0.1 (free ports, 1 model thread each by default), warms each
up, then sends `--requests` POST /recommend requests to each at concurrency `--concurrency`, with histories (and
user ids) taken in order from the test split. The requests are sent in `--rounds` alternating rounds (batched,
unbatched, batched, ...), so that load from other processes on the machine falls on both settings alike. Every
request has a timeout and every phase a time limit; the servers are stopped at the end (SIGTERM, then SIGKILL).

    .venv/bin/python bench/serve_load.py                        # e2 model, 2000 requests, concurrency 16
    .venv/bin/python bench/serve_load.py --requests 200         # quick

Reports per setting p50/p90/p99 latency (ms), requests/s (requests / wall time of its rounds), errors, and the
server's mean batch size; and the ratios batched/unbatched. Writes bench/out/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from sidrec.data import Dataset
from sidrec.io import write_json

SERVE = "import sidrec.cli.serve; from sidrec.cli import main; main()"  # works before cli/__init__ imports serve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`sidrec serve ARGS` as a subprocess on 127.0.0.1; `with Server(args) as url: ...`."""

    def __init__(self, args: list[str], threads: int = 1, start_timeout: float = 300, log_file: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-c", SERVE, "serve", *args, "--host", "127.0.0.1", "--port", str(self.port),
                    "--threads", str(threads)]
        self.env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
        self.start_timeout, self.log_file = start_timeout, log_file
        self.proc = None

    def __enter__(self) -> str:
        out = open(self.log_file, "w") if self.log_file else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        deadline = time.time() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"sidrec serve exited with {self.proc.returncode}: {' '.join(self.cmd)}"
                                 + (f" (see {self.log_file})" if self.log_file else ""))
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self.url
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                self.stop()
                raise SystemExit(f"sidrec serve did not answer /healthz within {self.start_timeout} s")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def __exit__(self, *exc):
        self.stop()


async def fire(url: str, bodies: list[dict], concurrency: int, timeout: float = 120.0,
               phase_limit: float = 1800.0) -> dict:
    """POST every body to url/recommend with `concurrency` workers; latencies (s), statuses, responses, wall time."""
    latencies = [float("nan")] * len(bodies)
    statuses: list = [None] * len(bodies)
    responses: list = [None] * len(bodies)
    next_i = 0
    t_end = time.perf_counter() + phase_limit

    async def worker(client: httpx.AsyncClient):
        nonlocal next_i
        while next_i < len(bodies) and time.perf_counter() < t_end:
            i, next_i = next_i, next_i + 1
            t0 = time.perf_counter()
            try:
                res = await client.post("/recommend", json=bodies[i])
                statuses[i] = res.status_code
                if res.status_code == 200:
                    responses[i] = res.json()
            except httpx.HTTPError as e:
                statuses[i] = type(e).__name__
            latencies[i] = time.perf_counter() - t0

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return {"latencies": latencies, "statuses": statuses, "responses": responses, "wall": time.perf_counter() - t0}


def test_bodies(data: str, split: str = "test", k: int = 10) -> list[dict]:
    df = Dataset.load(data).splits[split]
    return [{"user_id": int(u), "history": [int(i) for i in h], "k": k}
            for u, h in zip(df["user"].tolist(), df["history"].tolist())]


def summarize(latencies: list[float], statuses: list, wall: float) -> dict:
    lat = np.array([x for x, s in zip(latencies, statuses) if s == 200]) * 1000
    errors = sum(1 for s in statuses if s != 200)
    return {"requests": len(statuses), "ok": int(len(lat)), "errors": errors,
            "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
            "p90_ms": float(np.percentile(lat, 90)) if len(lat) else None,
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
            "mean_ms": float(lat.mean()) if len(lat) else None,
            "requests_per_s": len(statuses) / wall if wall > 0 else None, "wall_s": wall}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="runs/exp/e2/model")
    ap.add_argument("--sids", default="bench/out/sid48/rqkmeans-constrained/run0")
    ap.add_argument("--data", default="runs/industrial")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--requests", type=int, default=2000, help="requests per setting")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds per setting")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--max-batch", type=int, nargs="+", default=[32, 1], help="settings to compare")
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1, help="model threads per server")
    ap.add_argument("--warmup", type=int, default=32)
    ap.add_argument("--out", default="bench/out/serve_load.json")
    args = ap.parse_args()

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
              "cpu": platform.machine(), "cores": os.cpu_count(), "load_average_at_end": os.getloadavg(),
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
