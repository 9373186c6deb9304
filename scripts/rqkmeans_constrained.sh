#!/usr/bin/env bash
# Constrained (balanced) RQ-KMeans SIDs: `sidrec sid build --method rqkmeans-constrained` (MiniOneRec: rq/rqkmeans_constrained.sh).
# Usage (the workflow guide's flags; every flag is optional):
#   bash scripts/rqkmeans_constrained.sh --dataset Industrial_and_Scientific --root ./data/Amazon18/Industrial_and_Scientific \
#        [--emb FILE] [--output DIR] [--k 256] [--l 3] [--seed 42] [--max_iter N] [--collision reassign|dedup-level]
# Reads ROOT/DATASET.emb.npy (from scripts/amazon_text2emb.sh) and writes ROOT/sids/ (index.json, quality.json,
# codebooks, manifest.json), where the later wrappers look for SIDs. Other flags (--threads 1, --config FILE,
# --set KEY=VALUE) go to `sidrec sid build` as they are.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_common.sh"

sid_main rqkmeans-constrained "$@"
