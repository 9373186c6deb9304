"""Bench the SID builders on Industrial_and_Scientific (3,686 items) with the offline MiniLM embeddings.

Embeds the items (cached by the sidecar unless --force-embed), builds every method `--reps` times (medians;
the SIDs of all repetitions must be identical), loads the paper's shipped SIDs, and measures per method: collisions
before/after resolution, per-level code usage and normalised entropy, reconstruction error, build seconds, and the
mean cosine of item pairs sharing a first-level code vs random pairs. Writes bench/out/sid_methods.json and prints
a markdown table.

    .venv/bin/python bench/sid_methods.py [--data DIR] [--reps 3] [--threads 1]   # all methods, 48-token MiniLM
    .venv/bin/python bench/sid_methods.py --quick    # rqkmeans and rqkmeans-constrained, 2 builds each, on the
                                                     # benchmark fixture's 32-token embeddings

--data is a MiniOneRec folder or a canonical dataset (default: the Industrial_and_Scientific folder, see
bench/_common.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pandas as pd

from _common import OUT, default_data, fixture, machine, paper_index
from sidrec.embed import embed_items
from sidrec.errors import SidrecError
from sidrec.sid import METHODS, build_sids, load_sids, read_quality, sid_quality
from sidrec.sid.build import is_built



def load_items(data: str | None) -> tuple[object, str]:
    """A canonical dataset folder as it is; a MiniOneRec folder by its item.json (the only file the SIDs need)."""
    folder = Path(data) if data else default_data()
    if (folder / "items.parquet").exists():
        return folder, str(folder)
    item_json = sorted((folder / "index").glob("*.item.json"))
    if not item_json:
        raise SidrecError(f"{folder}: neither a canonical dataset (items.parquet) nor a MiniOneRec folder "
                          "(index/*.item.json); pass --data DIR")
    raw = json.loads(item_json[0].read_text())
    items = pd.DataFrame([{"item_id": int(k), **v} for k, v in raw.items()])
    items["categories"] = [[] for _ in range(len(items))]  # always empty in this file
    return items, str(item_json[0])


def cosine_sanity(X: np.ndarray, first: np.ndarray, pairs: int = 20000, seed: int = 0) -> dict:
    """Mean cosine over all pairs sharing a first-level code vs over random pairs."""
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    total, count = 0.0, 0
    for code in np.unique(first):
        idx = np.flatnonzero(first == code)
        if len(idx) < 2:
            continue
        S = Xn[idx] @ Xn[idx].T
        total += (S.sum() - np.trace(S)) / 2
        count += len(idx) * (len(idx) - 1) // 2
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(X), pairs), rng.integers(0, len(X), pairs)
    keep = a != b
    rand = float((Xn[a[keep]] * Xn[b[keep]]).sum(1).mean())
    return {"within_first_level": round(float(total) / max(count, 1), 4), "random": round(rand, 4),
            "pairs_within": int(count)}


def summarize(q: dict) -> dict:
    b, a = q["before"], q["after"]
    return {"collision_groups_before": b["collision_groups"], "collision_rate_before": b["collision_rate"],
            "collision_groups_after": a["collision_groups"], "max_items_per_sid_after": a["max_items_per_sid"],
            "lengths": a["lengths"], "used": [lv["used"] for lv in a["per_level"]],
            "entropy": [lv["entropy"] for lv in a["per_level"]], "entropy_raw": [lv["entropy"] for lv in b["per_level"]],
            "recon_error": q.get("recon_error")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="MiniOneRec folder or canonical dataset (default: the real data)")
    ap.add_argument("--out", default=str(OUT / "sid"))
    ap.add_argument("--quick", action="store_true", help="two k-means methods, 2 builds each, the fixture's embeddings")
    ap.add_argument("--emb", default=None, help="use these embeddings (.npy of the same items) instead of embedding")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of the k-means methods")
    ap.add_argument("--reps-trained", type=int, default=2, help="repetitions of rqkmeans-plus and rqvae")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for the builds (1: best on a shared CPU)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--force-embed", action="store_true")
    ap.add_argument("--max-seq-length", type=int, default=48, help="tokens per item text (the CPU setting; 0: the model limit, 256)")
    ap.add_argument("--reuse-builds", action="store_true", help="read finished builds' quality.json instead of rebuilding")
    args = ap.parse_args()
    if args.quick:
        args.methods, args.reps = "rqkmeans,rqkmeans-constrained", 2
        args.emb = args.emb or str(fixture(args.data)["embeddings"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    data, data_name = load_items(args.data)
    t0 = time.perf_counter()
    if args.emb:
        emb_file = Path(args.emb)
        info = json.loads(emb_file.with_suffix(".json").read_text()) | {"reused": True}
    else:
        emb_file = out / "emb_minilm.npy"
        info = embed_items(data, emb_file, model="minilm", force=args.force_embed, progress=False,
                           max_seq_length=args.max_seq_length or None)
    embed_wall = time.perf_counter() - t0
    X = np.load(emb_file)
    result = {"data": data_name, "num_items": len(X), "threads": args.threads, "loadavg_start": os.getloadavg(),
              "cpus": os.cpu_count(),
              "embedding": {"model": "minilm", "fields": info["fields"], "dim": info["dim"], "reused": info["reused"],
                            "seconds": info["seconds"], "wall_this_run": round(embed_wall, 2),
                            "empty_text": info["empty_text"]["count"]},
              "methods": {}}

    paper = paper_index(args.data)
    if paper is not None:
        codes_p, _ = load_sids(paper)
        qp = sid_quality(codes_p, 256)
        result["paper"] = {**summarize({"before": qp, "after": qp}), "cosine": cosine_sanity(X, codes_p[:, 0])}

    for method in args.methods.split(","):
        reps = args.reps if method in ("rqkmeans", "rqkmeans-constrained") else args.reps_trained
        secs, runs = [], []
        for r in range(reps):
            run_dir = out / method / f"run{r}"
            if args.reuse_builds and is_built(run_dir):
                q = read_quality(run_dir)
            else:
                q = build_sids(method, emb_file, data, run_dir, threads=args.threads)
            codes, _ = load_sids(out / method / f"run{r}")
            secs.append(q["seconds"])
            runs.append(codes)
            print(f"{method} run {r}: {q['seconds']:.1f} s", file=sys.stderr, flush=True)
        q["history"] = q.get("history") and [q["history"][0], q["history"][-1]]
        result["methods"][method] = {
            **summarize(q), "seconds": secs, "seconds_median": round(statistics.median(secs), 2),
            "deterministic": all(np.array_equal(runs[0], c) for c in runs[1:]), "reps": reps,
            "all_full_length": bool((runs[0] >= 0).all() and runs[0].shape[1] == 3),
            "cosine": cosine_sanity(X, runs[0][:, 0]), "history": q["history"],
        }
    result["loadavg_end"] = os.getloadavg()
    result["machine"] = machine()
    (out.parent / "sid_methods.json").write_text(json.dumps(result, indent=2))

    print(f"\nEmbedding: {len(X)} items, MiniLM ({info['dim']}-d), {info['seconds']} s"
          f"{' (reused cache; seconds recorded when made)' if info['reused'] else ''}; "
          f"loadavg {result['loadavg_start'][0]:.1f} on {os.cpu_count()} CPUs; builds with {args.threads} thread(s)\n")
    print("| method | collisions before -> after (groups) | codes used per level | entropy per level | recon err "
          "| build s (median) | deterministic | cos within L1 / random |")
    print("|---|---|---|---|---|---|---|---|")
    rows = [("paper index.json", result["paper"])] if "paper" in result else []
    rows += list(result["methods"].items())
    for name, m in rows:
        print(f"| {name} | {m['collision_groups_before']} -> {m['collision_groups_after']} "
              f"| {'/'.join(map(str, m['used']))} | {'/'.join(f'{e:.3f}' for e in m['entropy'])} "
              f"| {m['recon_error'] if m['recon_error'] is not None else '-'} "
              f"| {m.get('seconds_median', '-')} | {m.get('deterministic', '-')} "
              f"| {m['cosine']['within_first_level']:.3f} / {m['cosine']['random']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
