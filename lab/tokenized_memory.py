"""Memory of the tokenized SFT training set: packed arrays (`TokenizedExamples`) against one dict of two int lists
per example (the format before). Industrial's training examples (the demo's tasks, tokenizer and SIDs), repeated
`--copies` times to stand for a larger log; tracemalloc's peak and what stays allocated, per format.

    PYTHONPATH=src python lab/tokenized_memory.py --run runs/demo [--copies 10]
"""

import argparse
import time
import tracemalloc
from pathlib import Path

from transformers import AutoTokenizer

from sidrec.data import Dataset
from sidrec.sid.io import load_sids
from sidrec.tasks.builders import build_examples
from sidrec.train.sft import tokenize_examples


def as_lists(packed):
    return [packed[i] for i in range(len(packed))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--copies", type=int, default=10)
    a = ap.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(a.run / "sft" / "model")
    codes, _ = load_sids(a.run / "sid")
    ds = Dataset.load(a.run / "dataset")
    examples = build_examples(ds, codes, "train", {"seqrec": 1.0, "title2sid": 1.0, "sid2title": 1.0}, seed=42)
    examples = examples * a.copies
    for name, make in (("packed", lambda: tokenize_examples(examples, tokenizer, codes, 128)),
                       ("dict of int lists per example", lambda: as_lists(tokenize_examples(examples, tokenizer,
                                                                                            codes, 128)))):
        tracemalloc.start()
        t0 = time.perf_counter()
        out = make()
        held, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"{name}: {len(out):,} examples, held {held / 2**20:,.0f} MiB, peak {peak / 2**20:,.0f} MiB, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        del out


if __name__ == "__main__":
    main()
