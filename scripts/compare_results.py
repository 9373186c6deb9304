#!/usr/bin/env python3
"""Before / after: `sidrec compare BASELINE OPTIMIZED` (the guide's compare_results.py).

    python scripts/compare_results.py --baseline ./evaluation/sft_baseline --optimized ./evaluation/sft_optimized \\
        [--more ./evaluation/rl_run ...] [--names baseline,optimized,...] [--output_dir ./comparison]

Each input is a results.json file, an evaluation folder (scripts/evaluate.sh), a run folder (`sidrec pipeline`,
`sidrec baseline ...`) or an analysis folder (scripts/analyze_badcase.sh). Prints HR/NDCG@5,10,20 with deltas against
the baseline, and failure-pattern rates where analyses exist; --output_dir also writes compare.json, compare.md and
compare.png there.
"""

from __future__ import annotations

import argparse

from _common import exec_sidrec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=True)
    p.add_argument("--optimized", required=True)
    p.add_argument("--more", nargs="+", default=[], help="further runs, compared with the baseline too")
    p.add_argument("--names", help="display names, comma-separated, one per input (default baseline,optimized,...)")
    p.add_argument("--output_dir", "--out", dest="out")
    args = p.parse_args()

    runs = [args.baseline, args.optimized, *args.more]
    names = args.names or ",".join(["baseline", "optimized", *(f"run{i + 3}" for i in range(len(args.more)))])
    cmd = ["compare", *runs, "--names", names]
    if args.out:
        cmd += ["--out", args.out]
    exec_sidrec(cmd)


if __name__ == "__main__":
    main()
