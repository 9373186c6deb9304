"""CPU inference backends of the Recommender: fp32 torch vs int8 (dynamic quantization) vs ONNX Runtime.

Same model, SIDs, rows and beam width for every backend, in one run. The rows are cut into chunks and each chunk is
ranked by every backend in turn (torch, int8, onnx, then the next chunk), so load from other processes falls on all
backends alike. Reported per backend: rows/second of ranking (model load and ONNX export timed apart), the speed
ratio against fp32 torch, HR@10/NDCG@10 and their change against fp32, and how often the top-10 agrees with fp32's.

    .venv/bin/python bench/inference_backends.py --model runs/demo/sft/model --sids runs/demo/sid \
        --data runs/demo/dataset                                 # full test split (4,533 rows)
    .venv/bin/python bench/inference_backends.py --quick         # the benchmark fixture's model, 300 rows

Writes bench/out/inference_backends.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from _common import OUT, machine, model_args
from sidrec.evaluate.metrics import hr_ndcg, target_ranks
from sidrec.io import write_json
from sidrec.serve import BACKENDS, Recommender

TOLERANCE = 0.002  # the most HR@10 / NDCG@10 may move against fp32


def agreement(ref: list[list[int]], other: list[list[int]], k: int = 10) -> dict:
    a, b = [r[:k] for r in ref], [r[:k] for r in other]
    return {"top1_same": float(np.mean([x[:1] == y[:1] for x, y in zip(a, b)])),
            f"top{k}_same_order": float(np.mean([x == y for x, y in zip(a, b)])),
            f"top{k}_same_set": float(np.mean([set(x) == set(y) for x, y in zip(a, b)])),
            f"top{k}_overlap": float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b)]))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="model folder (default: the benchmark fixture's SFT model)")
    ap.add_argument("--sids", default=None, help="SIDs of the model (default: the fixture's)")
    ap.add_argument("--data", default=None, help="canonical dataset (default: the fixture's)")
    ap.add_argument("--quick", action="store_true", help="the first 300 rows")
    ap.add_argument("--split", default="test")
    ap.add_argument("--rows", type=int, default=None, help="first N rows only (default: the whole split)")
    ap.add_argument("--beams", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=512, help="rows per round-robin turn")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--out", default=str(OUT / "inference_backends.json"))
    args = ap.parse_args()
    if args.quick and args.rows is None:
        args.rows = 300
    model_args(args)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    names = args.backends.split(",")
    if names[0] != "torch":
        raise SystemExit("--backends must start with torch (the fp32 reference)")

    wall0 = time.time()
    recs, load_s = {}, {}
    for name in names:
        t0 = time.time()
        recs[name] = Recommender.load(args.model, args.sids, args.data, backend=name, beams=args.beams,
                                      batch_size=args.batch_size, threads=args.threads, device="cpu")
        load_s[name] = time.time() - t0
    dataset = recs["torch"].dataset
    df = dataset.splits[args.split]
    if args.rows:
        df = df.iloc[: args.rows]
    histories = [list(h) for h in df["history"]]
    targets = df["target"].tolist()

    warm = histories[: args.batch_size]
    for rec in recs.values():  # first-call allocations out of the timing
        rec.rank(warm)
    seconds = dict.fromkeys(names, 0.0)
    items: dict[str, list] = {n: [] for n in names}
    for start in range(0, len(histories), args.chunk):
        chunk = histories[start:start + args.chunk]
        for name, rec in recs.items():
            t0 = time.time()
            ranked = rec.rank(chunk)
            seconds[name] += time.time() - t0
            items[name].extend(ranked.items(rec.trie, limit=50))

    ref = hr_ndcg(target_ranks(items["torch"], targets))
    results = {}
    for name in names:
        m = hr_ndcg(target_ranks(items[name], targets))
        d_hr, d_ndcg = m["HR@10"] - ref["HR@10"], m["NDCG@10"] - ref["NDCG@10"]
        results[name] = {"rows_per_s": len(histories) / seconds[name], "rank_seconds": seconds[name],
                         "load_seconds": load_s[name], "speed_vs_fp32": seconds["torch"] / seconds[name],
                         "HR@10": m["HR@10"], "NDCG@10": m["NDCG@10"], "delta_HR@10": d_hr, "delta_NDCG@10": d_ndcg,
                         "within_tolerance": bool(abs(d_hr) <= TOLERANCE and abs(d_ndcg) <= TOLERANCE),
                         "metrics": m, **agreement(items["torch"], items[name])}
    out = {"model": args.model, "sids": args.sids, "data": args.data, "split": args.split, "rows": len(histories),
           "beams": args.beams, "batch_size": args.batch_size, "threads": args.threads, "chunk": args.chunk,
           "tolerance": TOLERANCE, "machine": machine(),
           "torch": torch.__version__, "wall_seconds": time.time() - wall0, "backends": results}
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    write_json(args.out, out)

    print(f"{len(histories)} rows of {args.split}, beam {args.beams}, {args.threads} thread(s); wall "
          f"{out['wall_seconds']:.0f} s\n")
    print("| backend | rows/s | speed vs fp32 | HR@10 | ΔHR@10 | NDCG@10 | ΔNDCG@10 | top-1 same | top-10 same set "
          "| top-10 overlap | load s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        label = "torch fp32" if name == "torch" else name
        print(f"| {label} | {r['rows_per_s']:.1f} | {r['speed_vs_fp32']:.2f}x | {r['HR@10']:.4f} | "
              f"{r['delta_HR@10']:+.4f} | {r['NDCG@10']:.4f} | {r['delta_NDCG@10']:+.4f} | {r['top1_same']:.3f} | "
              f"{r['top10_same_set']:.3f} | {r['top10_overlap']:.3f} | {r['load_seconds']:.1f} |")
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
