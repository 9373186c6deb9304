#!/usr/bin/env bash
# Raw Amazon 2018 reviews + metadata -> a canonical dataset: `sidrec data amazon18` (MiniOneRec:
# data/amazon18_data_process.sh; same window, k-core, history-10 and global 8:1:1 time split, with its defects fixed).
# Usage (the guide's flags):
#   bash scripts/amazon18_data_process.sh --dataset Industrial_and_Scientific --user_k 5 --item_k 5 \
#        --st_year 2016 --st_month 10 --ed_year 2018 --ed_month 11 --output_path ./data/Amazon18 \
#        [--reviews FILE --meta FILE | --input_path DIR] [any `sidrec data amazon18` flag, e.g. --no-progress]
# Writes OUTPUT_PATH/DATASET/ (items/users/train/valid/test parquet, meta.json, manifest.json).
# Raw files: --reviews/--meta (aliases --reviews_file/--metadata_file), or --input_path DIR holding DATASET_5.json(.gz)
# (or DATASET.json(.gz)) and meta_DATASET.json(.gz); with neither, sidrec downloads them (cached in ~/.cache/sidrec).
# Without --st_*/--ed_*, the window is sidrec's default, 2016-10 .. 2018-11 (the paper's split). sidrec applies
# --item_k too (MiniOneRec parses it but uses user_k for both).
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_common.sh"

DATASET="Industrial_and_Scientific"
OUTPUT_PATH="./data/Amazon18"
USER_K="" ITEM_K="" ST_YEAR="" ST_MONTH="" ED_YEAR="" ED_MONTH="" REVIEWS="" META="" INPUT_PATH=""
EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dataset|--dataset=*) val "$@"; DATASET="$(full_category "$VAL")"; shift $N ;;
        --user_k|--user_k=*) val "$@"; USER_K="$VAL"; shift $N ;;
        --item_k|--item_k=*) val "$@"; ITEM_K="$VAL"; shift $N ;;
        --st_year|--st_year=*) val "$@"; ST_YEAR="$VAL"; shift $N ;;
        --st_month|--st_month=*) val "$@"; ST_MONTH="$VAL"; shift $N ;;
        --ed_year|--ed_year=*) val "$@"; ED_YEAR="$VAL"; shift $N ;;
        --ed_month|--ed_month=*) val "$@"; ED_MONTH="$VAL"; shift $N ;;
        --output_path|--output_path=*) val "$@"; OUTPUT_PATH="$VAL"; shift $N ;;
        --reviews|--reviews=*|--reviews_file|--reviews_file=*) val "$@"; REVIEWS="$VAL"; shift $N ;;
        --meta|--meta=*|--metadata_file|--metadata_file=*) val "$@"; META="$VAL"; shift $N ;;
        --input_path|--input_path=*) val "$@"; INPUT_PATH="$VAL"; shift $N ;;
        *) EXTRA+=("$1"); shift ;;
    esac
done

month() {  # YEAR MONTH FLAG -> YYYY-MM
    [[ "$1" =~ ^[0-9]{4}$ ]] || die "--${3}_year must be a 4-digit year, got '$1'"
    [[ "$2" =~ ^[0-9]{1,2}$ ]] && (( 10#$2 >= 1 && 10#$2 <= 12 )) || die "--${3}_month must be 1..12, got '$2'"
    printf '%s-%02d' "$1" "$((10#$2))"
}
first_file() { local f; for f in "$@"; do [[ -f "$f" ]] && { echo "$f"; return; }; done; }

if [[ -n "$INPUT_PATH" ]]; then
    [[ -n "$REVIEWS" ]] || REVIEWS="$(first_file "$INPUT_PATH/${DATASET}_5.json.gz" "$INPUT_PATH/${DATASET}_5.json" \
        "$INPUT_PATH/$DATASET.json.gz" "$INPUT_PATH/$DATASET.json")"
    [[ -n "$META" ]] || META="$(first_file "$INPUT_PATH/meta_$DATASET.json.gz" "$INPUT_PATH/meta_$DATASET.json")"
    [[ -n "$REVIEWS" ]] || die "no reviews file in $INPUT_PATH (${DATASET}_5.json[.gz] or $DATASET.json[.gz])"
    [[ -n "$META" ]] || die "no metadata file in $INPUT_PATH (meta_$DATASET.json[.gz])"
fi

ARGS=(data amazon18 --category "$DATASET" --out "$OUTPUT_PATH/$DATASET")
[[ -n "$REVIEWS" ]] && ARGS+=(--reviews "$REVIEWS")
[[ -n "$META" ]] && ARGS+=(--meta "$META")
if [[ -n "$ST_YEAR$ST_MONTH" ]]; then
    [[ -n "$ST_YEAR" ]] || die "--st_month needs --st_year"
    ARGS+=(--start "$(month "$ST_YEAR" "${ST_MONTH:-1}" st)")
fi
if [[ -n "$ED_YEAR$ED_MONTH" ]]; then
    [[ -n "$ED_YEAR" ]] || die "--ed_month needs --ed_year"
    ARGS+=(--end "$(month "$ED_YEAR" "${ED_MONTH:-1}" ed)")
fi
[[ -n "$USER_K" ]] && ARGS+=(--user-k "$USER_K")
[[ -n "$ITEM_K" ]] && ARGS+=(--item-k "$ITEM_K")
run_sidrec "${ARGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
