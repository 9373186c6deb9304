#!/usr/bin/env bash
# RQ-VAE SIDs: `sidrec sid build --method rqvae` (MiniOneRec: rq/rqvae.sh + rq/generate_indices.py, one step here).
# Usage (the workflow guide's flags; every flag is optional):
#   bash scripts/rqvae.sh --dataset Industrial_and_Scientific --root ./data/Amazon18/Industrial_and_Scientific \
#        [--emb FILE] [--output DIR] [--data_path FILE] [--ckpt_dir DIR] [--lr 1e-3] [--epochs 500] [--batch_size N] [--num_emb_list 256 256 256] [--e_dim 32]
# Reads ROOT/DATASET.emb.npy (from scripts/amazon_text2emb.sh) and writes ROOT/sids/ (index.json, quality.json,
# codebooks, manifest.json), where the later wrappers look for SIDs. Other flags (--threads 1, --config FILE,
# --set KEY=VALUE) go to `sidrec sid build` as they are.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_common.sh"

sid_main rqvae "$@"
