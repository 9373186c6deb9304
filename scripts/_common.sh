# Shared by the workflow-guide wrappers in scripts/: sourced, never run. Each wrapper maps the guide's flags onto one
# `sidrec` command, prints that command (`+ sidrec ...`, ready to copy) and runs it.
# Environment: SIDREC (the sidrec executable, default <repo>/.venv/bin/sidrec), PYTHON (default <repo>/.venv/bin/python).

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SIDREC="${SIDREC:-$REPO/.venv/bin/sidrec}"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
PROG="$(basename "$0")"

die() { echo "$PROG: $*" >&2; exit 2; }
note() { echo "$PROG: note: $*" >&2; }

# `val "$@"` inside an option loop: the option's value (`--flag value` or `--flag=value`) in VAL, words to shift in N
val() {
    if [[ "$1" == *=* ]]; then VAL="${1#*=}"; N=1
    else [[ $# -ge 2 ]] || die "$1 needs a value"; VAL="$2"; N=2; fi
}

# one word as the shell would need it: bare when safe, else single-quoted
_q() { if [[ "$1" =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then printf '%s' "$1"; else printf '%s' "${1@Q}"; fi; }

show_sidrec() {
    local line="+ sidrec" w
    for w in "$@"; do line+=" $(_q "$w")"; done
    echo "$line"
}

_check_sidrec() {
    [[ -x "$SIDREC" ]] || command -v "$SIDREC" >/dev/null 2>&1 ||
        die "sidrec not found at $SIDREC: run 'make test' (or 'make demo') in $REPO to create .venv, or set SIDREC=/path/to/sidrec"
}

# print the command, then replace this shell with it
run_sidrec() { _check_sidrec; show_sidrec "$@"; exec "$SIDREC" "$@"; }
# print the command and run it, returning here (for wrappers that run two commands)
call_sidrec() { _check_sidrec; show_sidrec "$@"; "$SIDREC" "$@"; }

# a `sidrec sft`/`sidrec rl` run folder -> its model/ folder; a model folder stays as it is
model_dir() {
    local m="${1%/}"
    if [[ -f "$m/model/config.json" ]]; then echo "$m/model"; else echo "$m"; fi
}

# a short name for a model: its run folder's name (outputs/sft_x/model -> sft_x)
run_label() {
    local m="${1%/}"
    [[ "$(basename "$m")" == model ]] && m="$(dirname "$m")"
    basename "$m"
}

# MiniOneRec's short dataset names
full_category() {
    case "$1" in
        Industrial) echo Industrial_and_Scientific ;;
        Office) echo Office_Products ;;
        *) echo "$1" ;;
    esac
}

is_dataset() { [[ -f "$1/items.parquet" && -f "$1/manifest.json" ]]; }

# The SID wrappers (rqkmeans_constrained.sh, rqkmeans_plus.sh, generate_indices_plus.sh, rqvae.sh):
# `sid_main METHOD "$@"` -> sidrec sid build --method METHOD --emb ROOT/DATASET.emb.npy --data ROOT --out ROOT/sids ...
sid_main() {
    local method="$1"; shift
    local section="${method//-/_}"
    local dataset="Industrial_and_Scientific" root="" emb="" out="" levels="" codebook="" seed="" collision=""
    local force=0 inspect_only="${SID_INSPECT_IF_BUILT:-0}"
    local -a sets=() extra=()
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --dataset|--dataset=*) val "$@"; dataset="$(full_category "$VAL")"; shift $N ;;
            --root|--root=*) val "$@"; root="$VAL"; shift $N ;;
            --emb|--emb=*|--data_path|--data_path=*|--emb_path|--emb_path=*) val "$@"; emb="$VAL"; shift $N ;;
            --output|--output=*|--out|--out=*|--output_dir|--output_dir=*|--ckpt_dir|--ckpt_dir=*)
                val "$@"; out="$VAL"; shift $N ;;
            --k|--k=*|--codebook|--codebook=*|--codebook_size|--codebook_size=*) val "$@"; codebook="$VAL"; shift $N ;;
            --l|--l=*|--levels|--levels=*|--num_levels|--num_levels=*) val "$@"; levels="$VAL"; shift $N ;;
            --num_emb_list)  # MiniOneRec: one codebook size per level, e.g. --num_emb_list 256 256 256
                shift; local -a sizes=()
                while [[ $# -gt 0 && "$1" != --* ]]; do sizes+=("$1"); shift; done
                [[ ${#sizes[@]} -gt 0 ]] || die "--num_emb_list needs one size per level, e.g. --num_emb_list 256 256 256"
                local s
                for s in "${sizes[@]}"; do
                    [[ "$s" == "${sizes[0]}" ]] || die "--num_emb_list ${sizes[*]}: sidrec uses one codebook size for every level"
                done
                levels="${#sizes[@]}"; codebook="${sizes[0]}" ;;
            --seed|--seed=*) val "$@"; seed="$VAL"; shift $N ;;
            --collision|--collision=*) val "$@"; collision="$VAL"; shift $N ;;
            --epochs|--epochs=*|--lr|--lr=*|--batch_size|--batch_size=*|--weight_decay|--weight_decay=*|--beta|--beta=*|--device|--device=*)
                local key="${1%%=*}"; key="${key#--}"; val "$@"
                sets+=(--set "$section.$key=$VAL"); shift $N ;;
            --e_dim|--e_dim=*)
                val "$@"
                if [[ "$method" == rqvae ]]; then sets+=(--set "rqvae.e_dim=$VAL")
                else note "--e_dim ignored: $method quantises in the embedding space itself"; fi
                shift $N ;;
            --max_iter|--max_iter=*)  # k-means iterations
                val "$@"
                case "$method" in
                    rqkmeans) sets+=(--set "rqkmeans.niter=$VAL") ;;
                    rqkmeans-constrained) sets+=(--set "rqkmeans_constrained.iters=$VAL") ;;
                    *) note "--max_iter ignored for $method (use --epochs)" ;;
                esac
                shift $N ;;
            --pretrained_codebook_path|--pretrained_codebook_path=*|--ckpt_path|--ckpt_path=*)
                val "$@"; note "${1%%=*} ignored: sidrec builds $method in one step (RQ-Kmeans+ warm-starts from its own constrained RQ-Kmeans)"
                shift $N ;;
            --verbose) shift ;;
            --force) force=1; shift ;;
            *) extra+=("$1"); shift ;;
        esac
    done
    [[ -n "$root" ]] || root="./data/Amazon18/$dataset"
    [[ -n "$emb" ]] || emb="$root/$dataset.emb.npy"
    [[ -n "$out" ]] || out="$root/sids"
    if [[ "$inspect_only" == 1 && -f "$out/index.json" && -f "$out/quality.json" ]] &&
        grep -q "\"method\": \"$method\"" "$out/quality.json"; then
        note "$out already holds $method SIDs (sidrec builds and indexes in one step): showing them"
        run_sidrec sid inspect "$out"
    fi
    [[ -f "$emb" ]] || die "no embeddings at $emb: run scripts/amazon_text2emb.sh --dataset $dataset --root $root first, or pass --emb FILE"
    if [[ $force == 0 && -f "$out/manifest.json" ]] && grep -q '"imported"' "$out/manifest.json"; then
        die "$out holds SIDs imported with the dataset (e.g. the paper's index.json); pass --output DIR to build elsewhere, or --force to replace them"
    fi
    local -a args=(sid build --method "$method" --emb "$emb")
    is_dataset "$root" && args+=(--data "$root")
    args+=(--out "$out")
    [[ -n "$levels" ]] && args+=(--levels "$levels")
    [[ -n "$codebook" ]] && args+=(--codebook "$codebook")
    [[ -n "$seed" ]] && args+=(--seed "$seed")
    [[ -n "$collision" ]] && args+=(--collision "$collision")
    run_sidrec "${args[@]}" ${sets[@]+"${sets[@]}"} ${extra[@]+"${extra[@]}"}
}
