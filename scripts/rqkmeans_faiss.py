#!/usr/bin/env python3
"""RQ-KMeans SIDs (faiss): `sidrec sid build --method rqkmeans` (MiniOneRec: rq/rqkmeans_faiss.py).

    python scripts/rqkmeans_faiss.py --dataset Industrial_and_Scientific [--root DIR] [--data_path FILE]
        [--num_levels 3] [--codebook_size 256] [--uniform] [--output DIR] [-- any `sidrec sid build` flag]

Reads ROOT/DATASET.emb.npy (from scripts/amazon_text2emb.sh; ROOT defaults to ./data/Amazon18/DATASET) and writes
ROOT/sids/ (index.json, quality.json, manifest.json). Plain RQ-KMeans collides often; sidrec resolves collisions at
fixed length by default (--collision reassign). `--uniform` (MiniOneRec's Sinkhorn uniform mapping) selects sidrec's
balanced method, rqkmeans-constrained. Unknown flags (--threads 1, --set KEY=VALUE, --config FILE) are passed on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import die, exec_sidrec, full_category, note


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--dataset", default="Industrial_and_Scientific")
    p.add_argument("--root", help="canonical dataset folder (default ./data/Amazon18/DATASET)")
    p.add_argument("--data_path", "--emb", dest="emb", help="embedding file (default ROOT/DATASET.emb.npy)")
    p.add_argument("--output", "--out", "--output_dir", dest="out", help="SID folder (default ROOT/sids)")
    p.add_argument("--output_root", help="MiniOneRec's flag: SIDs go to OUTPUT_ROOT/DATASET/sids")
    p.add_argument("--num_levels", "--levels", dest="levels", type=int)
    p.add_argument("--codebook_size", "--codebook", dest="codebook", type=int)
    p.add_argument("--uniform", action="store_true", help="balanced codes: sidrec's rqkmeans-constrained")
    p.add_argument("--seed", type=int)
    p.add_argument("--collision", choices=["reassign", "dedup-level"])
    p.add_argument("--iters", type=int, help="Sinkhorn iterations in MiniOneRec; ignored")
    p.add_argument("--batch_size", type=int, help="ignored (sidrec clusters all items at once)")
    p.add_argument("--force", action="store_true", help="replace SIDs imported with the dataset")
    args, extra = p.parse_known_args()

    dataset = full_category(args.dataset)
    root = Path(args.root) if args.root else Path("data") / "Amazon18" / dataset
    emb = Path(args.emb) if args.emb else root / f"{dataset}.emb.npy"
    if args.out:
        out = Path(args.out)
    elif args.output_root:
        out = Path(args.output_root) / dataset / "sids"
    else:
        out = root / "sids"
    for flag in ("iters", "batch_size"):
        if getattr(args, flag) is not None:
            note(f"--{flag} ignored")
    if not emb.is_file():
        die(f"no embeddings at {emb}: run scripts/amazon_text2emb.sh --dataset {dataset} --root {root} first, "
            f"or pass --data_path FILE")
    manifest = out / "manifest.json"
    if not args.force and manifest.is_file():
        cfg = json.loads(manifest.read_text()).get("config") or {}
        if cfg.get("method") == "imported":
            die(f"{out} holds SIDs imported with the dataset (e.g. the paper's index.json); pass --output DIR to "
                f"build elsewhere, or --force to replace them")
    method = "rqkmeans-constrained" if args.uniform else "rqkmeans"
    if args.uniform:
        note("--uniform: balanced codes come from sidrec's rqkmeans-constrained method")
    cmd = ["sid", "build", "--method", method, "--emb", str(emb)]
    if (root / "items.parquet").is_file():
        cmd += ["--data", str(root)]
    cmd += ["--out", str(out)]
    for flag in ("levels", "codebook", "seed", "collision"):
        if getattr(args, flag) is not None:
            cmd += [f"--{flag}", str(getattr(args, flag))]
    exec_sidrec(cmd + extra)


if __name__ == "__main__":
    main()
