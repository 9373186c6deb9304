#!/usr/bin/env bash
# The one-command workflow (the guide's `bash pipeline_0.5b.sh`): `sidrec pipeline --config configs/qwen2.5-0.5b.yaml`,
# i.e. data -> embed -> sid -> sft -> rl (when rl.enabled) -> eval -> analyze, each stage cached under --out.
# Usage: bash scripts/pipeline_0.5b.sh [--config FILE] [--data DIR] [--out DIR] [any `sidrec pipeline` flag:
#        --from STAGE --until STAGE --set KEY=VALUE --iterate N --interactive/--no-interactive]
# Defaults: --config configs/qwen2.5-0.5b.yaml (one GPU), --out ./outputs/pipeline_0.5b, --data: sidrec's search
# (./data/Industrial_and_Scientific, ../shared/data/amazon18/..., else download). Like the guide's script it asks at
# each stage (run / skip / rerun / change SID method) when run from a terminal; --no-interactive turns that off.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_common.sh"

CONFIG="$REPO/configs/qwen2.5-0.5b.yaml"
DATA=""
OUT="./outputs/pipeline_0.5b"
EXTRA=()
ASKED=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --config|--config=*) val "$@"; CONFIG="$VAL"; shift $N ;;
        --data|--data=*) val "$@"; DATA="$VAL"; shift $N ;;
        --out|--out=*|--output_dir|--output_dir=*) val "$@"; OUT="$VAL"; shift $N ;;
        --interactive|--no-interactive) ASKED=1; EXTRA+=("$1"); shift ;;
        *) EXTRA+=("$1"); shift ;;
    esac
done

ARGS=(pipeline --config "$CONFIG")
[[ -n "$DATA" ]] && ARGS+=(--data "$DATA")
ARGS+=(--out "$OUT")
if [[ $ASKED == 0 && -t 0 && -t 1 ]]; then ARGS+=(--interactive); fi
run_sidrec "${ARGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
