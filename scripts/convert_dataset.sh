#!/usr/bin/env bash
# Dataset format conversion (MiniOneRec: convert_dataset.py), in the direction the input asks for:
#   a sidrec dataset (+ SIDs)         -> MiniOneRec's folder: train/ valid/ test/ CSVs, info/, index/, inter/
#                                        (`sidrec data export-minionerec`; byte-identical to the paper's files)
#   a MiniOneRec folder with CSVs     -> a sidrec dataset (`sidrec data import-minionerec`)
#   MiniOneRec's preprocessing output -> a sidrec dataset: DATASET.{train,valid,test}.inter + DATASET.item.json
#     (+ DATASET.index.json)             (the CSVs convert_dataset.py would build are staged, then imported)
# Usage (the guide's flags):
#   bash scripts/convert_dataset.sh --dataset_name Industrial_and_Scientific --data_dir DIR --output_dir DIR \
#        [--sids DIR_OR_INDEX_JSON] [--max_history 10]
# Defaults: --data_dir ./data/Amazon18/DATASET; --output_dir ./data/Amazon for an export (the guide's layout),
# ./data/sidrec/DATASET for an import; --sids (export) DATA_DIR/sids, where the SID wrappers write.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_common.sh"

DATASET="Industrial_and_Scientific"
DATA_DIR="" OUTPUT_DIR="" SIDS="" MAX_HISTORY=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dataset_name|--dataset_name=*|--dataset|--dataset=*|--category|--category=*)
            val "$@"; DATASET="$(full_category "$VAL")"; shift $N ;;
        --data_dir|--data_dir=*|--root|--root=*) val "$@"; DATA_DIR="$VAL"; shift $N ;;
        --output_dir|--output_dir=*|--out|--out=*) val "$@"; OUTPUT_DIR="$VAL"; shift $N ;;
        --sids|--sids=*|--index_file|--index_file=*|--sid_index_path|--sid_index_path=*) val "$@"; SIDS="$VAL"; shift $N ;;
        --max_history|--max_history=*) val "$@"; MAX_HISTORY="$VAL"; shift $N ;;
        --keep_longest_only|--max_valid_samples*|--max_test_samples*)
            die "${1%%=*} is not supported: sidrec keeps every row of every split (the paper's protocol)" ;;
        *) die "unknown flag $1 (see the header of $0)" ;;
    esac
done
[[ -n "$DATA_DIR" ]] || DATA_DIR="./data/Amazon18/$DATASET"
[[ -d "$DATA_DIR" ]] || die "$DATA_DIR does not exist"

if is_dataset "$DATA_DIR"; then  # sidrec dataset -> MiniOneRec CSVs
    [[ -z "$MAX_HISTORY" ]] || die "--max_history applies to imports only"
    ARGS=(data export-minionerec "$DATA_DIR" --out "${OUTPUT_DIR:-./data/Amazon}")
    [[ -n "$SIDS" ]] && ARGS+=(--sids "$SIDS")
    run_sidrec "${ARGS[@]}"
fi

OUTPUT_DIR="${OUTPUT_DIR:-./data/sidrec/$DATASET}"
IMPORT_EXTRA=()
[[ -n "$MAX_HISTORY" ]] && IMPORT_EXTRA+=(--max-history "$MAX_HISTORY")
if compgen -G "$DATA_DIR/train/*.csv" >/dev/null; then  # MiniOneRec folder -> sidrec dataset
    [[ -z "$SIDS" ]] || die "--sids: an imported MiniOneRec folder brings its SIDs from index/*.index.json"
    run_sidrec data import-minionerec "$DATA_DIR" --out "$OUTPUT_DIR" ${IMPORT_EXTRA[@]+"${IMPORT_EXTRA[@]}"}
fi

# MiniOneRec's preprocessing output (.inter + .item.json): stage the CSVs convert_dataset.py would write (the id
# columns, which are all the importer reads), then import them
ITEM_JSON="$DATA_DIR/$DATASET.item.json"
[[ -f "$ITEM_JSON" ]] || die "$DATA_DIR is neither a sidrec dataset, nor a MiniOneRec folder (train/*.csv), nor MiniOneRec preprocessing output ($DATASET.item.json + $DATASET.{train,valid,test}.inter); check --dataset_name"
INDEX_JSON="$SIDS"
[[ -n "$INDEX_JSON" && -d "$INDEX_JSON" ]] && INDEX_JSON="$INDEX_JSON/index.json"
[[ -n "$INDEX_JSON" ]] || { [[ -f "$DATA_DIR/$DATASET.index.json" ]] && INDEX_JSON="$DATA_DIR/$DATASET.index.json"; } || true
STAGE="$(mktemp -d "${TMPDIR:-/tmp}/convert_dataset.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
STEM="${DATASET}_5_2016-10-2018-11"  # convert_dataset.py's (fixed) file stem
mkdir -p "$STAGE/index" "$STAGE/train" "$STAGE/valid" "$STAGE/test"
cp "$ITEM_JSON" "$STAGE/index/$DATASET.item.json"
if [[ -n "$INDEX_JSON" ]]; then
    [[ -f "$INDEX_JSON" ]] || die "$INDEX_JSON does not exist"
    cp "$INDEX_JSON" "$STAGE/index/$DATASET.index.json"
fi
for split in train valid test; do
    INTER="$DATA_DIR/$DATASET.$split.inter"
    [[ -f "$INTER" ]] || die "$INTER is missing (MiniOneRec's preprocessing writes DATASET.{train,valid,test}.inter)"
    awk -F'\t' 'NR == 1 { print "user_id,history_item_id,item_id"; next }
        NF == 3 { n = split($2, h, " "); s = ""; for (i = 1; i <= n; i++) s = s (i > 1 ? ", " : "") h[i]
                  printf "A%s,\"[%s]\",%s\n", $1, s, $3 }' "$INTER" > "$STAGE/$split/$STEM.csv"
done
echo "staged $DATASET.{train,valid,test}.inter + $DATASET.item.json${INDEX_JSON:+ + $(basename "$INDEX_JSON")} as a MiniOneRec folder in $STAGE"
call_sidrec data import-minionerec "$STAGE" --out "$OUTPUT_DIR" ${IMPORT_EXTRA[@]+"${IMPORT_EXTRA[@]}"}
