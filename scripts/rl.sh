#!/usr/bin/env bash
# GRPO with the workflow's defaults (MiniOneRec's rl.sh settings on one GPU): runs scripts/rl.py, which prints and
# runs the `sidrec rl` command. Override a setting from the environment (MODEL_PATH=... NUM_GENERATIONS=8 bash
# scripts/rl.sh) or with rl.py flags after the script (they win over the defaults below: later flags count).
# The guide's quick check instead: --sample_train True --sample_size 10000 --train_batch_size 32 --num_train_epochs 1.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_common.sh"

MODEL_PATH="${MODEL_PATH:-}"                   # the SFT run folder (scripts/sft_single_gpu_swanlab.sh OUTPUT_DIR)
CATEGORY="${CATEGORY:-Industrial_and_Scientific}"
DATA_ROOT="${DATA_ROOT:-./data/Amazon18}"
TRAIN_BATCH_SIZE="${TRAIN_BATCH_SIZE:-64}"     # completions per forward/backward (4 prompts x 16)
GRADIENT_ACCUMULATION_STEPS="${GRADIENT_ACCUMULATION_STEPS:-2}"
NUM_TRAIN_EPOCHS="${NUM_TRAIN_EPOCHS:-2}"
SAMPLE_TRAIN="${SAMPLE_TRAIN:-False}"          # True + SAMPLE_SIZE: train on a sample of the train rows
SAMPLE_SIZE="${SAMPLE_SIZE:-10000}"
REWARD_TYPE="${REWARD_TYPE:-ranking}"          # rule | ranking | ranking_only | sasrec (needs --cf_path) | prefix
NUM_GENERATIONS="${NUM_GENERATIONS:-16}"
EVAL_STEP="${EVAL_STEP:-0.0999}"
LEARNING_RATE="${LEARNING_RATE:-1e-5}"
BETA="${BETA:-1e-3}"
BEAM_SEARCH="${BEAM_SEARCH:-True}"
ADD_GT="${ADD_GT:-False}"

HAS_MODEL=0
for a in "$@"; do [[ "$a" == --model_path || "$a" == --model_path=* ]] && HAS_MODEL=1; done
[[ -n "$MODEL_PATH" || $HAS_MODEL == 1 ]] || die "set MODEL_PATH=<SFT run folder> (or pass --model_path)"
ARGS=()
[[ -n "$MODEL_PATH" ]] && ARGS+=(--model_path "$MODEL_PATH")
ARGS+=(--category "$CATEGORY" --data_root "$DATA_ROOT"
    --train_batch_size "$TRAIN_BATCH_SIZE" --gradient_accumulation_steps "$GRADIENT_ACCUMULATION_STEPS"
    --num_train_epochs "$NUM_TRAIN_EPOCHS" --sample_train "$SAMPLE_TRAIN" --sample_size "$SAMPLE_SIZE"
    --reward_type "$REWARD_TYPE" --num_generations "$NUM_GENERATIONS" --eval_step "$EVAL_STEP"
    --learning_rate "$LEARNING_RATE" --beta "$BETA" --beam_search "$BEAM_SEARCH" --add_gt "$ADD_GT")
PY="$PYTHON"; [[ -x "$PY" ]] || PY=python3
exec "$PY" "$REPO/scripts/rl.py" "${ARGS[@]}" "$@"
