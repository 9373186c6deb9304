#!/usr/bin/env bash
# The RQ-Kmeans+ index (MiniOneRec: rq/generate_indices_plus.sh). sidrec's `sid build --method rqkmeans-plus` trains
# and writes index.json in one step, so: when ROOT/sids (or --output) already holds RQ-Kmeans+ SIDs this shows them
# (`sidrec sid inspect`); otherwise it builds them, exactly like scripts/rqkmeans_plus.sh.
# Usage: bash scripts/generate_indices_plus.sh --dataset Industrial_and_Scientific --root DIR [--output DIR]
#        [--num_emb_list 256 256 256] [--device cuda:0] [--ckpt_path IGNORED]
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_common.sh"

SID_INSPECT_IF_BUILT=1 sid_main rqkmeans-plus "$@"
