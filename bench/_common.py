"""What the benchmarks share: where the data is, a small run to measure on, the machine, and an HTTP load driver.

Imported as a sibling module (`from _common import ...`): Python puts a script's own folder on `sys.path`, so every
`bench/*.py` finds it when run as `python bench/NAME.py` from anywhere.
"""

from __future__ import annotations

import asyncio
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

from sidrec.errors import SidrecError

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
# the demo's search order: a copy under ./data, else the shared folder next to the repository
DATA_CANDIDATES = (ROOT / "data" / "Industrial_and_Scientific",
                   ROOT.parent / "shared" / "data" / "amazon18" / "Industrial_and_Scientific")
FIXTURE = OUT / "fixture"


def default_data() -> Path:
    """The Industrial_and_Scientific MiniOneRec folder (or canonical dataset) the benchmarks run on."""
    for folder in DATA_CANDIDATES:
        if folder.is_dir():
            return folder
    raise SidrecError("no Industrial_and_Scientific data: put the MiniOneRec folder at "
                      f"{DATA_CANDIDATES[0]} (or {DATA_CANDIDATES[1]}), or pass --data DIR")


def paper_index(data: str | Path | None = None) -> Path | None:
    """The paper's own SIDs (`index/*.index.json`) in a MiniOneRec folder, if it ships them."""
    folder = Path(data) if data else default_data()
    found = sorted((folder / "index").glob("*.index.json")) if (folder / "index").is_dir() else []
    return found[0] if found else None


def fixture(data: str | Path | None = None, out: str | Path = FIXTURE) -> dict[str, Path]:
    """A small run to measure on: `sidrec pipeline --config configs/smoke.yaml --until rl` on the real data.

    Cached by the pipeline's own ledger, so only the first call pays (about 3 minutes on 2 cores): the canonical
    dataset, MiniLM embeddings (32 tokens), 64-code balanced RQ-KMeans SIDs, a 2-layer SFT model and a few RL steps
    from it (a second model for A/B). The models are toys: the benchmarks built on them measure speed and agreement,
    not accuracy.
    """
    from sidrec.pipeline import load_pipeline_config, run_pipeline

    out = Path(out)
    cfg = load_pipeline_config(ROOT / "configs" / "smoke.yaml", [])
    run_pipeline(cfg, Path(data) if data else default_data(), out, until="rl")
    paths = {"run": out, "data": out / "dataset", "sids": out / "sid", "embeddings": out / "embed" / "embeddings.npy",
             "sft": out / "sft" / "model", "rl": out / "rl" / "model"}
    if not (paths["data"] / "items.parquet").exists():  # data was already canonical: the pipeline used it in place
        paths["data"] = Path(data) if data else default_data()
    for name, path in paths.items():
        if not path.exists():
            raise SidrecError(f"the benchmark fixture has no {name} at {path}: delete {out} and run again")
    return paths


def model_args(args) -> None:
    """Fill `args.model`, `args.sids` and `args.data` that were not given from the fixture's SFT run (built once)."""
    if not (args.model and args.sids and args.data):
        fx = fixture()
        args.model, args.sids, args.data = (str(args.model or fx["sft"]), str(args.sids or fx["sids"]),
                                            str(args.data or fx["data"]))


def machine() -> dict:
    """CPU model, cores, load and versions: what a benchmark figure was measured on."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


# ---- HTTP: `sidrec serve` as a subprocess and a concurrent client (serve_load.py, ab_replay.py) ----

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
        import httpx

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
               phase_limit: float = 1800.0, rate: float | None = None) -> dict:
    """POST every body to url/recommend with `concurrency` workers; latencies (s), statuses, responses, wall time.

    `rate` (requests/s): request i is sent no earlier than i/rate s after the start (an open-loop schedule, as long
    as `concurrency` workers keep up), and its latency counts from that scheduled time, so a server that falls
    behind is charged for the queue it builds."""
    import httpx

    latencies = [float("nan")] * len(bodies)
    statuses: list = [None] * len(bodies)
    responses: list = [None] * len(bodies)
    next_i = 0
    t_end = time.perf_counter() + phase_limit

    async def worker(client):
        nonlocal next_i
        while next_i < len(bodies) and time.perf_counter() < t_end:
            i, next_i = next_i, next_i + 1
            t0 = time.perf_counter()
            if rate:
                t0 = start + i / rate
                await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
            try:
                res = await client.post("/recommend", json=bodies[i])
                statuses[i] = res.status_code
                if res.status_code == 200:
                    responses[i] = res.json()
            except httpx.HTTPError as e:
                statuses[i] = type(e).__name__
            latencies[i] = time.perf_counter() - t0

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    t0 = start = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return {"latencies": latencies, "statuses": statuses, "responses": responses, "wall": time.perf_counter() - t0}


def test_bodies(data: str | Path, split: str = "test", k: int = 10) -> list[dict]:
    from sidrec.data import Dataset

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
