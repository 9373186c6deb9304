#!/usr/bin/env bash
# SFT on one GPU, logged to SwanLab when it is installed: `sidrec sft --config configs/qwen2.5-0.5b.yaml --set ...`
# (the guide's sft_single_gpu_swanlab.sh). Edit the settings below, or override any of them from the environment:
#   BASE_MODEL=./models/Qwen2.5-0.5B-Instruct NUM_EPOCHS=2 bash scripts/sft_single_gpu_swanlab.sh
# Flags: --base_model, --output_dir, --sid_index_path (SIDS), --data, --category, --config; anything else
# (e.g. --set sft.gradient_checkpointing=true) goes to `sidrec sft` as it is. Several GPUs:
#   accelerate launch --config_file configs/accelerate_ds_zero2.yaml -m sidrec sft --config configs/qwen2.5-0.5b.yaml ...
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_common.sh"

# ---- settings (the guide's values = configs/qwen2.5-0.5b.yaml). With another config (CONFIG=file.yaml or --config
# ---- file.yaml, e.g. an optimization_strategies.py output), the settings you do not set come from that file instead.
CONFIG_FLAG=""; for a in "$@"; do [[ "$a" == --config || "$a" == --config=* ]] && CONFIG_FLAG=1; done
guide() { [[ -n "${CONFIG:-}$CONFIG_FLAG" ]] || printf '%s' "$1"; }
BASE_MODEL="${BASE_MODEL:-$(guide Qwen/Qwen2.5-0.5B-Instruct)}"  # HF id or local folder; `small` = a CPU-sized Qwen2
BATCH_SIZE="${BATCH_SIZE:-$(guide 128)}"             # examples per optimiser step (gradient accumulation fills it)
MICRO_BATCH_SIZE="${MICRO_BATCH_SIZE:-$(guide 16)}"  # examples per forward/backward on the GPU
NUM_EPOCHS="${NUM_EPOCHS:-$(guide 3)}"
LEARNING_RATE="${LEARNING_RATE:-$(guide 5e-4)}"
CUTOFF_LEN="${CUTOFF_LEN:-$(guide 256)}"              # longest example in tokens (oldest history items dropped first)
CATEGORY="${CATEGORY:-Industrial_and_Scientific}"
DATA="${DATA:-./data/Amazon18/$CATEGORY}"            # canonical dataset (scripts/amazon18_data_process.sh)
SIDS="${SIDS:-}"                                     # SID folder or index.json; default DATA/sids
OUTPUT_DIR="${OUTPUT_DIR:-}"                         # default ./outputs/sft_0.5b_CATEGORY_TIMESTAMP; reuse one to resume
CONFIG="${CONFIG:-$REPO/configs/qwen2.5-0.5b.yaml}"
# SwanLab when importable (pip install swanlab; swanlab login), else no logger; REPORT_TO=tensorboard|wandb|none
if [[ -z "${REPORT_TO:-}" ]]; then
    if "$PYTHON" -c "import swanlab" >/dev/null 2>&1; then REPORT_TO=swanlab
    else REPORT_TO=none; note "swanlab is not installed (pip install swanlab): training without a logger (REPORT_TO=none)"; fi
fi

EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --base_model|--base_model=*) val "$@"; BASE_MODEL="$VAL"; shift $N ;;
        --output_dir|--output_dir=*|--out|--out=*) val "$@"; OUTPUT_DIR="$VAL"; shift $N ;;
        --sid_index_path|--sid_index_path=*|--sids|--sids=*) val "$@"; SIDS="$VAL"; shift $N ;;
        --data|--data=*) val "$@"; DATA="$VAL"; shift $N ;;
        --category|--category=*) val "$@"; CATEGORY="$(full_category "$VAL")"; shift $N ;;
        --config|--config=*) val "$@"; CONFIG="$VAL"; shift $N ;;
        --item_meta_path|--item_meta_path=*|--train_file|--train_file=*|--eval_file|--eval_file=*)
            val "$@"; note "${1%%=*} ignored: sidrec reads items and splits from DATA ($DATA)"; shift $N ;;
        *) EXTRA+=("$1"); shift ;;
    esac
done
SIDS="${SIDS:-$DATA/sids}"
OUTPUT_DIR="${OUTPUT_DIR:-./outputs/sft_0.5b_${CATEGORY}_$(date +%Y%m%d_%H%M%S)}"

ARGS=(sft --config "$CONFIG" --data "$DATA" --sids "$SIDS" --out "$OUTPUT_DIR")
[[ -n "$BASE_MODEL" ]] && ARGS+=(--set "sft.base_model=$BASE_MODEL")
[[ -n "$BATCH_SIZE" ]] && ARGS+=(--set "sft.batch_size=$BATCH_SIZE")
[[ -n "$MICRO_BATCH_SIZE" ]] && ARGS+=(--set "sft.micro_batch_size=$MICRO_BATCH_SIZE")
[[ -n "$NUM_EPOCHS" ]] && ARGS+=(--set "sft.epochs=$NUM_EPOCHS")
[[ -n "$LEARNING_RATE" ]] && ARGS+=(--set "sft.learning_rate=$LEARNING_RATE")
[[ -n "$CUTOFF_LEN" ]] && ARGS+=(--set "sft.cutoff_len=$CUTOFF_LEN")
ARGS+=(--set "sft.report_to=$REPORT_TO")
echo "model -> $OUTPUT_DIR/model"
run_sidrec "${ARGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
