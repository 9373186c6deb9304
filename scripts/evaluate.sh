#!/usr/bin/env bash
# Test-set evaluation: `sidrec eval` (MiniOneRec: evaluate.sh + split/merge/calc.py, one command here: constrained
# beam search over the whole catalogue, HR/NDCG@1,3,5,10,20,50 on exact items, plus the paper's SID-match scoring).
# Usage (the guide's flags):
#   bash scripts/evaluate.sh --base_model ./outputs/sft_0.5b_Industrial_and_Scientific_xxx --category Industrial_and_Scientific \
#        [--data_root ./data/Amazon18] [--data DIR] [--sids DIR] [--output_dir DIR] [--num_beams 50] [--batch_size 32]
# --base_model: a `sidrec sft`/`sidrec rl` run folder or its model/ folder. The dataset is DATA_ROOT/CATEGORY, the SIDs
# those the model was trained with (its sidrec_binding.json; DATA/sids for a model without one). SIDs or a dataset
# other than the model's are refused; --allow-mismatch (passed on to `sidrec eval`) evaluates anyway. Writes OUTPUT_DIR (default ./evaluation/<run name>): results.json, predictions.jsonl, manifest.json.
# Other flags (--max-rows N, --cutoff-len N, --dtype bf16, --split valid) go to `sidrec eval` as they are.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_common.sh"

MODEL="" CATEGORY="Industrial_and_Scientific" DATA_ROOT="./data/Amazon18" DATA="" SIDS="" OUTPUT_DIR=""
EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --base_model|--base_model=*|--model|--model=*) val "$@"; MODEL="$VAL"; shift $N ;;
        --category|--category=*) val "$@"; CATEGORY="$(full_category "$VAL")"; shift $N ;;
        --data_root|--data_root=*) val "$@"; DATA_ROOT="$VAL"; shift $N ;;
        --data|--data=*) val "$@"; DATA="$VAL"; shift $N ;;
        --sids|--sids=*|--sid_index_path|--sid_index_path=*) val "$@"; SIDS="$VAL"; shift $N ;;
        --output_dir|--output_dir=*|--out|--out=*|--result_json_data|--result_json_data=*) val "$@"; OUTPUT_DIR="$VAL"; shift $N ;;
        --num_beams|--num_beams=*) val "$@"; EXTRA+=(--beams "$VAL"); shift $N ;;
        --batch_size|--batch_size=*) val "$@"; EXTRA+=(--batch-size "$VAL"); shift $N ;;
        --max_rows|--max_rows=*) val "$@"; EXTRA+=(--max-rows "$VAL"); shift $N ;;
        --cutoff_len|--cutoff_len=*) val "$@"; EXTRA+=(--cutoff-len "$VAL"); shift $N ;;
        --max_new_tokens|--max_new_tokens=*|--temperature|--temperature=*|--guidance_scale|--guidance_scale=*|--length_penalty|--length_penalty=*)
            val "$@"; note "${1%%=*} ignored: sidrec decodes exactly one SID per beam (no sampling, no length penalty)"; shift $N ;;
        --info_file|--info_file=*|--test_data_path|--test_data_path=*)
            val "$@"; note "${1%%=*} ignored: sidrec reads the catalogue and the test split from the dataset"; shift $N ;;
        *) EXTRA+=("$1"); shift ;;
    esac
done
[[ -n "$MODEL" ]] || die "--base_model is required (a sidrec sft/rl run folder or its model/ folder)"
DATA="${DATA:-$DATA_ROOT/$CATEGORY}"
MODEL="$(model_dir "$MODEL")"
# the SIDs the model was trained with (recorded in its sidrec_binding.json), else DATA/sids; other SIDs are refused
SIDS_ARG=()
if [[ -n "$SIDS" ]]; then SIDS_ARG=(--sids "$SIDS")
elif [[ ! -f "$MODEL/sidrec_binding.json" ]]; then SIDS_ARG=(--sids "$DATA/sids"); fi
OUTPUT_DIR="${OUTPUT_DIR:-./evaluation/$(run_label "$MODEL")}"
run_sidrec eval --model "$MODEL" --data "$DATA" ${SIDS_ARG[@]+"${SIDS_ARG[@]}"} --out "$OUTPUT_DIR" ${EXTRA[@]+"${EXTRA[@]}"}
