#!/usr/bin/env bash
# Item text -> embeddings: `sidrec embed` (MiniOneRec: rq/text2emb/amazon_text2emb.sh).
# Usage (the guide's flags):
#   bash scripts/amazon_text2emb.sh --dataset Industrial_and_Scientific --root ./data/Amazon18/Industrial_and_Scientific \
#        --plm_checkpoint BAAI/bge-small-en-v1.5 [--out FILE] [--max_sent_len N] [--batch_size N] [--device cuda]
# ROOT is a canonical dataset (scripts/amazon18_data_process.sh or scripts/convert_dataset.sh makes one). Writes
# ROOT/DATASET.emb.npy (+ a .json sidecar), which the SID wrappers read. --plm_checkpoint: a hub name, a local folder,
# or `minilm` (offline all-MiniLM-L6-v2); default sidrec's, BAAI/bge-small-en-v1.5. Any other flag (--fields,
# --config configs/sid-cpu.yaml, --force, --set KEY=VALUE) goes to `sidrec embed` as it is.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_common.sh"

DATASET="Industrial_and_Scientific"
ROOT="" OUT="" MODEL="" MAXLEN="" BATCH="" DEVICE=""
EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dataset|--dataset=*) val "$@"; DATASET="$(full_category "$VAL")"; shift $N ;;
        --root|--root=*) val "$@"; ROOT="$VAL"; shift $N ;;
        --plm_checkpoint|--plm_checkpoint=*|--model|--model=*) val "$@"; MODEL="$VAL"; shift $N ;;
        --plm_name|--plm_name=*) val "$@"; note "--plm_name ignored (the model is --plm_checkpoint)"; shift $N ;;
        --out|--out=*|--output|--output=*) val "$@"; OUT="$VAL"; shift $N ;;
        --max_sent_len|--max_sent_len=*|--max-seq-length|--max-seq-length=*) val "$@"; MAXLEN="$VAL"; shift $N ;;
        --batch_size|--batch_size=*|--batch-size|--batch-size=*) val "$@"; BATCH="$VAL"; shift $N ;;
        --device|--device=*) val "$@"; DEVICE="$VAL"; shift $N ;;
        *) EXTRA+=("$1"); shift ;;
    esac
done
[[ -n "$ROOT" ]] || ROOT="./data/Amazon18/$DATASET"
[[ -n "$OUT" ]] || OUT="$ROOT/$DATASET.emb.npy"
if [[ -d "$ROOT" ]] && ! is_dataset "$ROOT"; then
    die "$ROOT is not a sidrec dataset folder: make one with scripts/amazon18_data_process.sh, or convert a MiniOneRec folder with scripts/convert_dataset.sh --data_dir $ROOT"
fi

ARGS=(embed --data "$ROOT" --out "$OUT")
[[ -n "$MODEL" ]] && ARGS+=(--model "$MODEL")
[[ -n "$MAXLEN" ]] && ARGS+=(--max-seq-length "$MAXLEN")
[[ -n "$BATCH" ]] && ARGS+=(--batch-size "$BATCH")
[[ -n "$DEVICE" ]] && ARGS+=(--device "$DEVICE")
run_sidrec "${ARGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
