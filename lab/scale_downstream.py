"""What the stages after the data stage cost on a very large dataset folder (e.g. the 10^8-interaction one that
`bench/scale.py --stages interactions --interactions 1e8` writes): each step's seconds and the process's RSS after it.

Steps: `Dataset.load`; history lengths of every split; the transition-prior counts over every split (what
`sidrec serve --rerank` computes at start-up); SFT's example stream (`tasks.builders.iter_examples`, seqrec +
title2sid) up to --examples examples, with random 3-level SIDs standing in for real ones (example building does not
depend on their values).

    PYTHONPATH=src python lab/scale_downstream.py --data /path/inter_100000000/out --examples 1000000
"""

from __future__ import annotations

import argparse
import itertools
import resource
import time

import numpy as np


def rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**30


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--examples", type=int, default=1_000_000)
    args = ap.parse_args()

    from sidrec.data.canonical import SPLITS, Dataset, history_lengths
    from sidrec.evaluate.fusion import transition_counts
    from sidrec.tasks.builders import iter_examples

    rows = []

    def step(name, fn):
        t = time.perf_counter()
        out = fn()
        rows.append((name, time.perf_counter() - t, rss_gib(), peak_gib()))
        print(f"{name:<44} {rows[-1][1]:8.1f} s  RSS {rows[-1][2]:5.1f} GiB  peak {rows[-1][3]:5.1f} GiB", flush=True)
        return out

    ds = step("Dataset.load", lambda: Dataset.load(args.data))
    print(ds.counts())
    lengths = step("history lengths, every split", lambda: [history_lengths(ds.splits[s]["history"]) for s in SPLITS])
    print("mean history length", float(np.mean(np.concatenate(lengths))))
    table = step("transition counts, every split", lambda: transition_counts(ds, None))
    print("distinct (last item, target) pairs", len(table[0]))
    codes = np.random.default_rng(0).integers(0, 256, (ds.num_items, 3))
    stream = iter_examples(ds, codes, "train", {"seqrec": 1.0, "title2sid": 1.0})
    first = step("SFT examples: the plan and the first example", lambda: next(stream))
    n = step(f"next {args.examples:,} examples",
             lambda: sum(1 for _ in itertools.islice(stream, args.examples)))
    print("first example:", {k: (v if k != "history" else v[-3:]) for k, v in first.items()}, "counted", n)


if __name__ == "__main__":
    main()
