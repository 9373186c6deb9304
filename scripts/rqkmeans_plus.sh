#!/usr/bin/env bash
# RQ-Kmeans+ SIDs: `sidrec sid build --method rqkmeans-plus` (MiniOneRec: rq/rqkmeans_plus.sh + rq/generate_indices_plus.sh).
# sidrec warm-starts from its own constrained RQ-KMeans and writes the index in the same step, so running
# rqkmeans_constrained.sh first is not needed (harmless: this build replaces ROOT/sids).
# Usage (the workflow guide's flags; every flag is optional):
#   bash scripts/rqkmeans_plus.sh --dataset Industrial_and_Scientific --root ./data/Amazon18/Industrial_and_Scientific \
#        [--emb FILE] [--output DIR] [--num_emb_list 256 256 256] [--lr 1e-4] [--epochs 200] [--batch_size N] [--device cpu|cuda]
# Reads ROOT/DATASET.emb.npy (from scripts/amazon_text2emb.sh) and writes ROOT/sids/ (index.json, quality.json,
# codebooks, manifest.json), where the later wrappers look for SIDs. Other flags (--threads 1, --config FILE,
# --set KEY=VALUE) go to `sidrec sid build` as they are.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_common.sh"

sid_main rqkmeans-plus "$@"
