#!/usr/bin/env bash
# Bad-case analysis (the guide's analyze_badcase.sh): evaluate the model if needed (`sidrec eval`), then
# `sidrec analyze`: failure patterns (cold start, long tail, short history, category mismatch, recency), rank
# distribution, SID quality, plots and a text summary.
# Usage (the guide's flags):
#   bash scripts/analyze_badcase.sh --model ./outputs/sft_0.5b_Industrial_and_Scientific_xxx \
#        --category Industrial_and_Scientific --top_k 10 [--data_root ./data/Amazon18] [--data DIR] [--sids DIR]
#        [--eval_dir DIR] [--output_dir DIR] [--num_beams 50] [--batch_size 32] [--max_rows N] [--reeval]
# --model: a `sidrec sft`/`sidrec rl` run folder or model folder; or an evaluation folder (results.json +
# predictions.jsonl from sidrec eval, or any baseline run such as `sidrec baseline sasrec`), analysed as it is.
# The evaluation goes to --eval_dir (default ./evaluation/<run name>, where scripts/evaluate.sh writes it) and is
# reused when it is newer than the model (--reeval forces a new one). Writes OUTPUT_DIR (default
# ./analysis_output/CATEGORY_TIMESTAMP): eval_results.jsonl, badcase_report.json, visualizations/ (plots,
# summary_report.txt). Other flags (--set analysis.KEY=VALUE, --config FILE) go to `sidrec analyze`.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_common.sh"

MODEL="" CATEGORY="Industrial_and_Scientific" DATA_ROOT="./data/Amazon18" DATA="" SIDS="" EVAL_DIR="" OUTPUT_DIR=""
TOP_K="" REEVAL=0
EVAL_ARGS=() EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --model|--model=*|--base_model|--base_model=*) val "$@"; MODEL="$VAL"; shift $N ;;
        --category|--category=*) val "$@"; CATEGORY="$(full_category "$VAL")"; shift $N ;;
        --top_k|--top_k=*|--top-k|--top-k=*) val "$@"; TOP_K="$VAL"; shift $N ;;
        --data_root|--data_root=*) val "$@"; DATA_ROOT="$VAL"; shift $N ;;
        --data|--data=*) val "$@"; DATA="$VAL"; shift $N ;;
        --sids|--sids=*|--sid_index_path|--sid_index_path=*) val "$@"; SIDS="$VAL"; shift $N ;;
        --eval_dir|--eval_dir=*) val "$@"; EVAL_DIR="$VAL"; shift $N ;;
        --output_dir|--output_dir=*|--out|--out=*) val "$@"; OUTPUT_DIR="$VAL"; shift $N ;;
        --num_beams|--num_beams=*) val "$@"; EVAL_ARGS+=(--beams "$VAL"); shift $N ;;
        --batch_size|--batch_size=*) val "$@"; EVAL_ARGS+=(--batch-size "$VAL"); shift $N ;;
        --max_rows|--max_rows=*) val "$@"; EVAL_ARGS+=(--max-rows "$VAL"); shift $N ;;
        --reeval) REEVAL=1; shift ;;
        *) EXTRA+=("$1"); shift ;;
    esac
done
[[ -n "$MODEL" ]] || die "--model is required (a sidrec sft/rl run folder, a model folder or an evaluation folder)"
DATA="${DATA:-$DATA_ROOT/$CATEGORY}"
SIDS="${SIDS:-$DATA/sids}"
OUTPUT_DIR="${OUTPUT_DIR:-./analysis_output/${CATEGORY}_$(date +%Y%m%d_%H%M%S)}"

if [[ -f "$MODEL/results.json" && -f "$MODEL/predictions.jsonl" ]]; then
    EVAL_DIR="$MODEL"  # already evaluated: analyse as it is
    [[ ${#EVAL_ARGS[@]} -eq 0 ]] || note "--num_beams/--batch_size/--max_rows ignored: $MODEL is already an evaluation"
else
    MODEL_DIR="$(model_dir "$MODEL")"
    [[ -f "$MODEL_DIR/config.json" ]] || die "$MODEL: neither a model folder nor an evaluation folder (results.json + predictions.jsonl)"
    EVAL_DIR="${EVAL_DIR:-./evaluation/$(run_label "$MODEL")}"
    if [[ $REEVAL == 0 && -f "$EVAL_DIR/results.json" && -f "$EVAL_DIR/manifest.json" &&
          -z "$(find "$MODEL_DIR" -type f -newer "$EVAL_DIR/results.json" -print -quit)" ]]; then
        note "reusing the evaluation in $EVAL_DIR (newer than the model; --reeval to evaluate again)"
    else
        call_sidrec eval --model "$MODEL_DIR" --data "$DATA" --sids "$SIDS" --out "$EVAL_DIR" ${EVAL_ARGS[@]+"${EVAL_ARGS[@]}"}
    fi
fi

ARGS=(analyze --eval "$EVAL_DIR" --data "$DATA")
[[ -e "$SIDS" ]] && ARGS+=(--sids "$SIDS")
ARGS+=(--out "$OUTPUT_DIR")
[[ -n "$TOP_K" ]] && ARGS+=(--top-k "$TOP_K")
echo "report -> $OUTPUT_DIR/badcase_report.json, summary -> $OUTPUT_DIR/visualizations/summary_report.txt"
run_sidrec "${ARGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
