"""Cost against size: wall time, peak memory and each stage's own quality figure, from 10^4 to 10^6 items and
10^5 to 10^7 interactions, on generated data in the real input formats.

Data (generated, seeded, under --work): clustered 384-d item embeddings (a skewed mixture of Gaussians, unit norm);
Amazon-2018 review + metadata files (`.json.gz` lines as `sidrec.data.amazon18` reads them: power-law item
popularity, titles of ~10 words and descriptions of ~80); the same log as an interactions Parquet + item table
(`sidrec.data.interactions`).

Stages, each run in its own process with one thread (peak RSS = that process's ru_maxrss, from os.wait4):
  sid          balanced RQ-KMeans as `sid build` runs it (exact up to `fit_sample` items, sample-fit above):
               seconds, peak RSS, per-level cluster sizes vs n/K, collisions before/after reassignment
  sid-exact    the same with fit_sample=None (the exact method at every size)
  rqkmeans     plain RQ-KMeans (sample-fit above its `fit_sample` too), for comparison
  trie         SidTrie.build on the `sid` stage's SIDs: seconds, table bytes, peak RSS
  beam         constrained beam search (a tiny untrained Qwen2, batch 8, beam 20) on that trie: rows/s, validity
  eval         `evaluate_generative` (the `sidrec eval` path: load and check dataset, SIDs and model, build the trie,
               beam 50 over 128 test rows, beams to items, metrics, predictions.jsonl) with a tiny untrained Qwen2
               over a generated catalogue of n titled items: rows/s without the one-off load, and each phase's seconds
  serve        `sidrec serve` (1 model thread, micro-batches of 32) on that catalogue and model, driven as
               bench/serve_load.py drives it but open-loop at 20 requests/s (--serve-requests 600, --quick 200;
               16 connections): p50/p99 latency, startup seconds, the server's peak RSS (VmHWM)
  amazon       `preprocess_amazon18` on N generated reviews: seconds, reviews/s, peak RSS
  interactions `import_interactions` on the same log as Parquet: seconds, rows/s, peak RSS

    python bench/scale.py --quick                       # 10^4 items, 10^5 interactions: under 2 minutes
    python bench/scale.py                               # 10^4..10^6 items, 10^6 and 10^7 interactions (~60 min)
    python bench/scale.py --stages sid --items 1000000  # one measurement
    python bench/scale.py --stages eval,serve --catalogue-items 3686,1000000  # eval and serve, as in the docs

eval and serve run at --catalogue-items (default 3,686, the size of the real Industrial_and_Scientific catalogue,
and 10^6; --quick: 10^4 like the other item stages); the other item stages at --items.

Writes bench/out/scale.json, bench/out/scale.md (the table) and bench/out/scale.png (log-log seconds and peak RSS
against size, one line per stage). `--plot-from scale.json --png PATH` only redraws the plot from recorded rows.
10^8 interactions run only when asked (`--stages interactions --interactions 1e6,1e7,1e8`: ~4 min to generate the log
and its 10^7-item table, then ~11 min and ~14 GiB for the Parquet import, docs/benchmarks.md); otherwise the table
extrapolates them from the measured curve (a power law through the two largest sizes) and says so.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _common import OUT, load_avg, machine
from sidrec.io import write_json, write_text

ITEM_STAGES = ("sid", "sid-exact", "rqkmeans", "trie", "beam", "eval", "serve")
LOG_STAGES = ("amazon", "interactions")
DIM, CODEBOOK, LEVELS = 384, 256, 3
WORDS = np.array("steel bolt adapter sensor digital meter kit pack industrial lab grade heavy duty compact precision "
                 "wire cable valve pump filter glove safety tape clamp switch relay motor gear bearing seal spring "
                 "nozzle tube hose fitting probe gauge scale timer battery charger lamp lens mount bracket".split())


# ---------------------------------------------------------------------------------------------------- data
def embeddings(path: Path, n: int, seed: int = 0, chunk: int = 100_000) -> Path:
    """n unit-norm float32 vectors around 2,000 centres with power-law weights (items cluster by category)."""
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, DIM)).astype(np.float32)
    w = 1.0 / np.arange(1, 2001) ** 0.8
    X = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype=np.float32, shape=(n, DIM))
    for a in range(0, n, chunk):
        m = min(chunk, n - a)
        x = centres[rng.choice(2000, m, p=w / w.sum())] + 0.7 * rng.standard_normal((m, DIM), dtype=np.float32)
        X[a:a + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    X.flush()
    del X
    os.replace(path.with_suffix(".tmp.npy"), path)
    return path


def _text(rng, lo: int, hi: int, count: int) -> list[str]:
    lengths = rng.integers(lo, hi, count)
    words = WORDS[rng.integers(0, len(WORDS), int(lengths.sum()))].tolist()
    out, i = [], 0
    for n in lengths.tolist():
        out.append(" ".join(words[i:i + n]))
        i += n
    return out


def interaction_log(n: int, seed: int = 0):
    """(user, item, time) arrays of n interactions: Zipf item popularity (s=1.0), ~n/8 users with ~8 each."""
    rng = np.random.default_rng(seed)
    n_items = max(n // 10, 100)
    p = 1.0 / np.arange(1, n_items + 1)
    items = rng.choice(n_items, n, p=p / p.sum())
    users = rng.integers(0, max(n // 8, 10), n)
    times = rng.integers(1_480_000_000, 1_540_000_000, n)  # 2016-11 .. 2018-10, inside MiniOneRec's window
    return users, items, times, n_items


def amazon_files(folder: Path, n: int, seed: int = 0, chunk: int = 200_000) -> tuple[Path, Path]:
    """Amazon-2018 `reviews.json.gz` (n lines) and `meta.json.gz` (one line per item)."""
    reviews, meta = folder / "reviews.json.gz", folder / "meta.json.gz"
    if reviews.exists() and meta.exists():
        return reviews, meta
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    users, items, times, n_items = interaction_log(n, seed)
    with gzip.open(folder / "reviews.tmp", "wt", compresslevel=1) as f:
        for a in range(0, n, chunk):
            texts = _text(rng, 5, 40, min(chunk, n - a))
            f.writelines(json.dumps({"overall": 5.0, "verified": True, "reviewerID": f"A{u:09d}", "asin": f"B{i:09d}",
                                     "reviewText": t, "summary": t[:30], "unixReviewTime": int(ts)}) + "\n"
                         for u, i, ts, t in zip(users[a:a + chunk].tolist(), items[a:a + chunk].tolist(),
                                                times[a:a + chunk].tolist(), texts))
    with gzip.open(folder / "meta.tmp", "wt", compresslevel=1) as f:
        titles, descs = _text(rng, 6, 16, n_items), _text(rng, 40, 120, n_items)
        f.writelines(json.dumps({"asin": f"B{i:09d}", "title": t, "description": [d], "brand": "Acme",
                                 "category": ["Industrial & Scientific"]}) + "\n"
                     for i, (t, d) in enumerate(zip(titles, descs)))
    os.replace(folder / "reviews.tmp", reviews)
    os.replace(folder / "meta.tmp", meta)
    return reviews, meta


def interaction_files(folder: Path, n: int, seed: int = 0, chunk: int = 1_000_000) -> tuple[Path, Path]:
    """The same log as `interactions.parquet` (user, item, timestamp) + `items.parquet` (item_id, title, description).
    The item table is written `chunk` items at a time, so the 10^7 item texts of a 10^8 log are never all in memory."""
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq

    inter, table = folder / "interactions.parquet", folder / "items.parquet"
    if inter.exists() and table.exists():
        return inter, table
    folder.mkdir(parents=True, exist_ok=True)
    users, items, times, n_items = interaction_log(n, seed)
    pl.DataFrame({"user": users, "item": items, "timestamp": times}).write_parquet(folder / "interactions.tmp")
    del users, items, times
    rng = np.random.default_rng(seed + 1)
    schema = pa.schema([("item_id", pa.int64()), ("title", pa.string()), ("description", pa.string())])
    with pq.ParquetWriter(folder / "items.tmp", schema) as w:
        for a in range(0, n_items, chunk):
            k = min(chunk, n_items - a)
            w.write_table(pa.table({"item_id": np.arange(a, a + k), "title": _text(rng, 6, 16, k),
                                    "description": _text(rng, 40, 120, k)}, schema=schema))
    os.replace(folder / "interactions.tmp", inter)
    os.replace(folder / "items.tmp", table)
    return inter, table


# ---------------------------------------------------------------------------------------------------- stages
def run_sid(work: Path, n: int, method: str) -> dict:
    """`build_sids`, the `sid build` path (fit, encode, reassign, index.json, quality.json)."""
    from sidrec.sid import build_sids
    from sidrec.sid.constrained import FIT_SAMPLE

    params = {"fit_sample": None} if method == "sid-exact" else {}
    name = "rqkmeans" if method == "rqkmeans" else "rqkmeans-constrained"
    out = work / f"{method}_{n}"
    t0 = time.perf_counter()
    q = build_sids(name, embeddings(work / f"emb_{n}.npy", n), None, out, LEVELS, CODEBOOK, threads=1, **params)
    seconds = time.perf_counter() - t0
    if method == "sid":
        from sidrec.sid import load_sids

        np.save(work / f"codes_{n}.npy", load_sids(out)[0])
    target = n / CODEBOOK
    balance = [{"min": lv["min_size"], "max": lv["max_size"], "used": lv["used"],
                "max_dev": 1.0 if lv["used"] < CODEBOOK else  # an unused code: a cluster of size 0
                round(max(lv["max_size"] - target, target - lv["min_size"]) / target, 4)}
               for lv in q["before"]["per_level"]]
    return {"seconds": seconds, "fit_encode_seconds": q["seconds"], "balance": balance,
            "collision_groups_before": q["before"]["collision_groups"],
            "collision_groups_after": q["after"]["collision_groups"], "recon_error": q["recon_error"],
            "sampled": name == "rqkmeans-constrained" and method == "sid" and n > FIT_SAMPLE}


def _codes(work: Path, n: int) -> np.ndarray:
    path = work / f"codes_{n}.npy"
    if path.exists():
        return np.load(path)
    rng = np.random.default_rng(0)  # distinct random SIDs when the sid stage was not run
    flat = rng.choice(CODEBOOK ** LEVELS, n, replace=False)
    return np.stack([flat // CODEBOOK ** (LEVELS - 1 - l) % CODEBOOK for l in range(LEVELS)], 1)


def _trie(codes: np.ndarray):
    from sidrec.decode import SidTrie

    return SidTrie.build(codes, [np.arange(CODEBOOK) + 10 + l * CODEBOOK for l in range(LEVELS)])


def run_trie(work: Path, n: int) -> dict:
    import sidrec.decode  # noqa: F401 - torch's import is not the trie's cost

    codes = _codes(work, n)
    t0 = time.perf_counter()
    trie = _trie(codes)
    seconds = time.perf_counter() - t0
    tables = sum(t.numel() * t.element_size() for t in (*trie.allowed, *trie.child))
    return {"seconds": seconds, "table_mb": round(tables / 2**20, 1), "sids": trie.num_sids,
            "nodes": [int(a.shape[0]) for a in trie.allowed]}


def run_beam(work: Path, n: int, rows: int = 64, batch: int = 8, beams: int = 20) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from sidrec.decode import constrained_beam_search

    torch.manual_seed(0)
    trie = _trie(_codes(work, n))
    cfg = Qwen2Config(vocab_size=10 + LEVELS * CODEBOOK, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model = Qwen2ForCausalLM(cfg).eval()
    prompts = torch.randint(10, cfg.vocab_size, (rows, 30))
    valid = {tuple(s) for s in trie.sids.tolist()}
    t0 = time.perf_counter()
    ok = total = 0
    for a in range(0, rows, batch):
        ids = prompts[a:a + batch]
        res = constrained_beam_search(model, ids, torch.ones_like(ids), trie, beams)
        got = res.sid_index[res.sid_index >= 0]
        ok += sum(tuple(trie.sids[s].tolist()) in valid for s in got.tolist())
        total += res.sid_index.size
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows_per_s": round(rows / seconds, 1), "valid": round(ok / total, 4)}


def catalogue(work: Path, n: int, rows: int = 128, seed: int = 0) -> tuple[Path, Path, Path]:
    """A product run over n items, as `sidrec eval` and `sidrec serve` read it: a canonical dataset (n titled items,
    `rows` test rows of 10 random items each), its SIDs (the `sid` stage's, else random distinct ones) and a tiny
    untrained Qwen2 with every SID token, bound to both. Same model and rows at every n: only the catalogue grows."""
    import pandas as pd

    from sidrec.data import Dataset
    from sidrec.data.sid_index import token, write_index
    from sidrec.model.backbone import build_small_model
    from sidrec.model.binding import write_binding
    from sidrec.model.tokenizer import build_data_tokenizer
    from sidrec.train.config import SmallModelConfig

    root = work / f"catalogue_{n}"
    data, sids, model = root / "data", root / "sid", root / "model"
    if (model / "sidrec_binding.json").exists():
        return data, sids, model
    rng = np.random.default_rng(seed)
    items = pd.DataFrame({"item_id": np.arange(n), "title": _text(rng, 6, 16, n)})
    split = lambda m, t0: pd.DataFrame({"user": np.arange(m), "history": list(rng.integers(0, n, (m, 10))),  # noqa
                                        "target": rng.integers(0, n, m), "timestamp": t0 + np.arange(m)})
    Dataset.from_frames(items, {"train": split(rows, 0), "valid": split(8, rows), "test": split(rows, rows + 8)},
                        meta={"name": f"scale-{n}"}).save(data)
    codes = _codes(work, n)
    sids.mkdir(parents=True, exist_ok=True)
    write_index(sids / "index.json", codes)
    tokenizer = build_data_tokenizer(_text(np.random.default_rng(seed), 6, 16, 2000),
                                     [token(l, c) for l in range(LEVELS) for c in range(CODEBOOK)], vocab_size=300)
    cfg = SmallModelConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128,
                           vocab_size=300, dropout=0.0)
    build_small_model(tokenizer, cfg, seed=seed).save_pretrained(model, safe_serialization=True)
    tokenizer.save_pretrained(model)
    write_binding(model, codes, sids, data)
    return data, sids, model


def run_eval(work: Path, n: int, beams: int = 50, batch: int = 32) -> dict:
    """`evaluate_generative` as `sidrec eval` runs it, timed by phase: loading (dataset, SIDs, binding, model, trie),
    ranking the rows (constrained beam search), and the rest (beams to items, metrics, predictions.jsonl)."""
    import sidrec.evaluate.generative as gen
    from sidrec.decode.inference import InferenceModel

    data, sids, model = catalogue(work, n)
    phase = {}

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            phase[name] = time.perf_counter() - t
            return out
        return wrapper

    load, rank = gen.load_for_inference, InferenceModel.rank
    gen.load_for_inference, InferenceModel.rank = timed("load", load), timed("rank", rank)
    try:
        t0 = time.perf_counter()
        res = gen.evaluate_generative(model, data, sids, work / f"catalogue_{n}" / "eval", beams=beams,
                                      batch_size=batch)
        seconds = time.perf_counter() - t0
    finally:
        gen.load_for_inference, InferenceModel.rank = load, rank
    rows = res["num_samples"]
    after = seconds - phase["load"] - phase["rank"]
    return {"seconds": seconds, "rows": rows, "load_s": round(phase["load"], 2), "rank_s": round(phase["rank"], 2),
            "after_s": round(after, 2), "rows_per_s": round(rows / (phase["rank"] + after), 1),
            "rows_per_s_with_load": round(rows / seconds, 1), "valid": res["valid_sid_rate"]}


def _vm_hwm(pid: int) -> int:
    """Peak resident memory (MiB) of a running process, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return -1


def run_serve(work: Path, n: int, requests: int = 600, rate: float = 20.0, concurrency: int = 16) -> dict:
    """`sidrec serve` (1 model thread, micro-batches of up to 32) under an open-loop `rate` of POST /recommend
    (bench/_common.fire, as bench/serve_load.py drives it): startup seconds, p50/p99 latency, server peak RSS."""
    import asyncio

    from _common import Server, fire, summarize, test_bodies

    data, sids, model = catalogue(work, n)
    bodies = test_bodies(data)
    server = Server(["--model", str(model), "--sids", str(sids), "--data", str(data), "--max-batch", "32",
                     "--log", str(work / f"catalogue_{n}" / "impressions.sqlite")], threads=1,
                    log_file=work / f"catalogue_{n}" / "serve.log")
    t0 = time.perf_counter()
    url = server.__enter__()
    startup = time.perf_counter() - t0
    try:
        asyncio.run(fire(url, bodies[:32], 4))  # warm-up
        got = asyncio.run(fire(url, [bodies[i % len(bodies)] for i in range(requests)], concurrency, rate=rate))
        server_mb = _vm_hwm(server.proc.pid)
    finally:
        server.stop()
    s = summarize(got["latencies"], got["statuses"], got["wall"])
    return {"seconds": startup, "startup_s": round(startup, 1), "rate": rate, "requests": requests,
            "p50_ms": round(s["p50_ms"], 1), "p99_ms": round(s["p99_ms"], 1), "errors": s["errors"],
            "requests_per_s": round(s["requests_per_s"], 1), "server_peak_rss_mb": server_mb}


def run_amazon(work: Path, n: int) -> dict:
    from sidrec.data.amazon18 import preprocess_amazon18

    reviews, meta = amazon_files(work / f"amazon_{n}", n)
    t0 = time.perf_counter()
    ds = preprocess_amazon18("Synthetic", work / f"amazon_{n}" / "out", reviews=reviews, meta=meta, progress=False)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows_per_s": round(n / seconds), "items": len(ds.items),
            "file_mb": round(reviews.stat().st_size / 2**20, 1)}


def run_interactions(work: Path, n: int) -> dict:
    from sidrec.data.interactions import import_interactions

    inter, items = interaction_files(work / f"inter_{n}", n)
    t0 = time.perf_counter()
    ds = import_interactions(inter, items, work / f"inter_{n}" / "out")
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows_per_s": round(n / seconds), "items": len(ds.items)}


def prepare(work: Path, stage: str, n: int) -> None:
    """Generate a stage's input (not timed)."""
    if stage in ("sid", "sid-exact", "rqkmeans"):
        embeddings(work / f"emb_{n}.npy", n)
    elif stage in ("eval", "serve"):
        catalogue(work, n)
    elif stage == "amazon":
        amazon_files(work / f"amazon_{n}", n)
    elif stage == "interactions":
        interaction_files(work / f"inter_{n}", n)


def worker(stage: str, n: int, work: Path, mode: str, serve_requests: int | None = None) -> None:
    if mode == "prepare":
        prepare(work, stage, n)
        return
    fn = {"trie": run_trie, "beam": run_beam, "eval": run_eval, "serve": run_serve, "amazon": run_amazon,
          "interactions": run_interactions}.get(stage)
    if stage == "serve":
        out = run_serve(work, n, serve_requests or 600)
    else:
        out = fn(work, n) if fn else run_sid(work, n, stage)
    print("RESULT " + json.dumps(out), flush=True)


def measure(stage: str, n: int, work: Path, timeout: float, serve_requests: int = 600) -> dict:
    """Run one stage in a child process; its result, wall seconds, peak RSS (MiB) and the load around it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    base = [sys.executable, __file__, "--worker", stage, "--size", str(n), "--work", str(work), "--serve-requests",
            str(serve_requests)]
    subprocess.run([*base, "--mode", "prepare"], env=env, check=True)
    load0, t0 = load_avg(), time.time()
    log = work / f"log_{stage}_{n}.txt"
    with open(log, "w") as f:
        proc = subprocess.Popen([*base, "--mode", "run"], env=env, stdout=f, stderr=subprocess.STDOUT)
        while True:  # os.wait4, not Popen.wait: it returns this child's own resource usage (peak RSS)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.time() - t0 > timeout:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    row = {"stage": stage, "size": n, "wall_s": round(time.time() - t0, 2), "load_before": load0,
           "load_after": load_avg(), "peak_rss_mb": round(usage.ru_maxrss / 1024)}
    out = log.read_text()
    lines = [l for l in out.splitlines() if l.startswith("RESULT ")]
    if proc.returncode == 0 and lines:
        row.update(json.loads(lines[-1][7:]))
        row["ok"] = True
    else:
        row["ok"] = False
        row["error"] = "timeout" if proc.returncode in (-9, 137) else (out.strip().splitlines() or ["?"])[-1][:300]
    return row


def figure(row: dict) -> str:
    if not row["ok"]:
        return f"not finished: {row['error']}"
    s = row["stage"]
    if s in ("sid", "sid-exact", "rqkmeans"):
        dev = "/".join(f"{b['max_dev']:.1%}" for b in row["balance"])
        return (f"max size deviation from n/K per level {dev}; collision groups {row['collision_groups_before']}→"
                f"{row['collision_groups_after']}" + ("; sample-fit" if row.get("sampled") else ""))
    if s == "trie":
        return f"{row['sids']} SIDs, tables {row['table_mb']} MiB"
    if s == "beam":
        return f"{row['rows_per_s']} rows/s, valid {row['valid']:.0%}"
    if s == "eval":
        return (f"{row['rows_per_s']} rows/s beam 50 ({row['rows']} rows: load {row['load_s']} s, rank "
                f"{row['rank_s']} s, after {row['after_s']} s), valid {row['valid']:.0%}")
    if s == "serve":
        return (f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms at {row['rate']:g} req/s, {row['errors']} errors; "
                f"startup {row['startup_s']} s, server peak {row['server_peak_rss_mb']:,} MiB")
    return f"{row['rows_per_s']:,} rows/s, {row['items']} items kept"


def extrapolate(rows: list[dict], stage: str, target: int) -> dict | None:
    """Power law through the two largest finished sizes of `stage`: (seconds, peak RSS MiB) at `target`."""
    pts = sorted((r["size"], r["seconds"], r["peak_rss_mb"]) for r in rows if r["stage"] == stage and r["ok"])
    if len(pts) < 2:
        return None
    (n1, t1, m1), (n2, t2, m2) = pts[-2:]
    b = np.log(t2 / t1) / np.log(n2 / n1)
    bm = np.log(max(m2, 1) / max(m1, 1)) / np.log(n2 / n1)
    return {"stage": stage, "size": target, "seconds": round(t2 * (target / n2) ** b, 1), "exponent": round(b, 2),
            "peak_rss_mb": round(m2 * (target / n2) ** bm), "from_sizes": [n1, n2]}


LABELS = {"sid": "sid (balanced, default)", "sid-exact": "sid-exact (balanced, every item)",
          "rqkmeans": "rqkmeans (plain)", "trie": "trie build", "beam": "beam search (64 rows)",
          "eval": "eval (128 rows, with loading)", "serve": "serve (startup)",
          "amazon": "amazon (preprocess)", "interactions": "interactions (import)"}


def plot(rows: list[dict], path: Path, extrapolated: list[dict] = ()) -> None:
    """Seconds and peak RSS against size, log-log, one line per stage; extrapolated sizes dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex="col")
    for stage in dict.fromkeys(r["stage"] for r in rows):
        pts = sorted((r["size"], r["seconds"], r["peak_rss_mb"] / 1024) for r in rows
                     if r["stage"] == stage and r["ok"])
        if not pts:
            continue
        col = 1 if stage in LOG_STAGES else 0
        n, t, m = zip(*pts)
        for ax, y in ((axes[0, col], t), (axes[1, col], m)):
            line, = ax.plot(n, y, "o-", label=LABELS.get(stage, stage))
            for e in extrapolated:
                if e["stage"] == stage:
                    y2 = e["seconds"] if ax is axes[0, col] else e["peak_rss_mb"] / 1024
                    ax.plot([n[-1], e["size"]], [y[-1], y2], "--", color=line.get_color())
                    ax.plot([e["size"]], [y2], "o", mfc="none", color=line.get_color())
    for col, what in ((0, "catalogue items"), (1, "interactions (review lines / Parquet rows)")):
        for row, ylabel in ((0, "seconds"), (1, "peak RSS (GiB)")):
            ax = axes[row, col]
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
        axes[1, col].yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        axes[1, col].yaxis.set_major_formatter(FormatStrFormatter("%g"))
        axes[1, col].yaxis.set_minor_formatter(NullFormatter())
        axes[1, col].set_xlabel(what)
    for ax in (axes[1, 0], axes[0, 1]):
        if ax.get_legend_handles_labels()[0]:  # a run of only item stages or only log stages leaves one side empty
            ax.legend(fontsize=8, loc="upper left")
    if extrapolated:
        axes[0, 1].set_title("dashed, open marker: extrapolated, not run", fontsize=9)
    fig.suptitle("sidrec: cost against size (1 thread, 2-core machine shared with other jobs)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def report(rows: list[dict], out: Path, args) -> str:
    """Write out.json, out.md and out.png; returns the markdown table."""
    ran = {r["stage"] for r in rows if r["ok"] and r["size"] >= 100_000_000}  # measured: nothing to extrapolate
    extra = [e for e in (extrapolate(rows, s, 100_000_000) for s in LOG_STAGES if s not in ran) if e]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), {"machine": machine(), "command": " ".join(["python bench/scale.py",
               *sys.argv[1:]]), "quick": args.quick, "rows": rows, "extrapolated": extra})
    lines = ["| stage | size | seconds | peak RSS (MiB) | load (1 min) | figure |", "|---|---:|---:|---:|---|---|"]
    for r in sorted(rows, key=lambda r: (r["stage"], r["size"])):
        secs = f"{r['seconds']:.1f}" if r["ok"] else f">{r['wall_s']:.0f}"
        lines.append(f"| {r['stage']} | {r['size']:,} | {secs} | {r['peak_rss_mb']:,} | {r['load_before']}–"
                     f"{r['load_after']} | {figure(r)} |")
    for e in extra:
        lines.append(f"| {e['stage']} | {e['size']:,} | ~{e['seconds']:,.0f} (extrapolated) | ~{e['peak_rss_mb']:,} "
                     f"(extrapolated) | – | not run: power law n^{e['exponent']} through {e['from_sizes']} |")
    write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    plot(rows, out.with_suffix(".png"), extra)
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--items", default=None, help="comma-separated catalogue sizes (default 10^4,10^5,10^6)")
    ap.add_argument("--interactions", default=None, help="comma-separated log sizes (default 10^6,10^7)")
    ap.add_argument("--exact-items", default="10000,20000,50000", help="sizes for sid-exact (it is O(n K) per step)")
    ap.add_argument("--catalogue-items", default="3686,1000000", help="sizes for eval and serve")
    ap.add_argument("--serve-requests", type=int, default=None, help="requests at 20/s per serve row (600; quick 200)")
    ap.add_argument("--stages", default=",".join(ITEM_STAGES + LOG_STAGES))
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per measurement before it counts as failed")
    ap.add_argument("--work", default=str(OUT / "scale_data"), help="where generated inputs are cached")
    ap.add_argument("--out", default=str(OUT / "scale"), help="output stem: .json, .md, .png")
    ap.add_argument("--append", action="store_true", help="add to the rows already in the output JSON")
    ap.add_argument("--plot-from", help="only draw the plot from the rows of this scale.json (no measurement)")
    ap.add_argument("--png", help="where --plot-from writes the plot (default: --out with .png)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="run", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plot_from:
        saved = json.loads(Path(args.plot_from).read_text())
        plot(saved["rows"], Path(args.png or Path(args.out).with_suffix(".png")), saved.get("extrapolated", []))
        return 0
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.worker:
        worker(args.worker, args.size, work, args.mode, args.serve_requests)
        return 0

    sizes = lambda s: [int(float(x)) for x in s.split(",")]  # noqa: E731 - accepts 1e6
    items = sizes(args.items or ("10000" if args.quick else "10000,100000,1000000"))
    logs = sizes(args.interactions or ("100000" if args.quick else "1000000,10000000"))
    exact = [] if args.quick else sizes(args.exact_items)
    product = items if args.quick else sizes(args.catalogue_items)
    stages = args.stages.split(",")
    if args.quick:
        stages = [s for s in stages if s not in ("sid-exact", "rqkmeans")]
    plan = [(s, n) for s in stages if s in ITEM_STAGES
            for n in (exact if s == "sid-exact" else product if s in ("eval", "serve") else items)]
    plan += [(s, n) for s in stages if s in LOG_STAGES for n in logs]
    out = Path(args.out)
    rows = json.loads(out.with_suffix(".json").read_text())["rows"] if args.append and \
        out.with_suffix(".json").exists() else []
    table = ""
    for stage, n in plan:
        row = measure(stage, n, work, args.timeout, args.serve_requests or (200 if args.quick else 600))
        rows = [r for r in rows if (r["stage"], r["size"]) != (stage, n)] + [row]
        print(f"{stage:>12} {n:>10,}: {row['wall_s']:>8.1f} s, {row['peak_rss_mb']:>6} MiB, load "
              f"{row['load_before']}->{row['load_after']}; {figure(row)}", flush=True)
        table = report(rows, out, args)  # after every measurement: a long run interrupted keeps what it measured
    print(table)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
