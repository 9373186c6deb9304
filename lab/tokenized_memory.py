"""Memory of the SFT training set on its way to the Trainer, on Industrial's training rows (the demo's tasks,
tokenizer and SIDs) repeated `--copies` times to stand for a larger log; tracemalloc's peak and what stays allocated:

1. the untokenized examples: built whole as one dict per example (`build_examples`, how `run_sft` took them before)
   against streamed one at a time (`train_examples` / `iter_examples`, what `run_sft` does now);
2. the tokenized examples: packed arrays (`TokenizedExamples`) against one dict of two int lists per example.

    PYTHONPATH=src python lab/tokenized_memory.py --run runs/demo [--copies 5] [--tokenizer DIR]
"""

import argparse
import time
import tracemalloc
from pathlib import Path

import pandas as pd
from transformers import AutoTokenizer

from sidrec.data import Dataset
from sidrec.sid.io import load_sids
from sidrec.tasks.builders import build_examples, iter_examples
from sidrec.train.sft import tokenize_examples

TASKS = {"seqrec": 1.0, "title2sid": 1.0, "sid2title": 1.0}


def as_lists(packed):
    return [packed[i] for i in range(len(packed))]


def measure(name, make):
    tracemalloc.start()
    t0 = time.perf_counter()
    out = make()
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n = out if isinstance(out, int) else len(out)
    print(f"{name}: {n:,} examples, held {held / 2**20:,.0f} MiB, peak {peak / 2**20:,.0f} MiB, "
          f"{time.perf_counter() - t0:.0f} s", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--copies", type=int, default=5)
    ap.add_argument("--tokenizer", type=Path, help="default: RUN/sft/model")
    a = ap.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(a.tokenizer or a.run / "sft" / "model")
    codes, _ = load_sids(a.run / "sid")
    ds = Dataset.load(a.run / "dataset")
    ds.splits["train"] = pd.concat([ds.splits["train"]] * a.copies, ignore_index=True)
    stream = lambda: iter_examples(ds, codes, "train", TASKS, seed=42)  # noqa: E731
    measure("untokenized, a list of dicts", lambda: build_examples(ds, codes, "train", TASKS, seed=42))
    measure("untokenized, streamed", lambda: sum(1 for _ in stream()))
    measure("tokenized from the stream, packed", lambda: tokenize_examples(stream(), tokenizer, codes, 128))
    measure("tokenized, a dict of int lists per example",
            lambda: as_lists(tokenize_examples(stream(), tokenizer, codes, 128)))


if __name__ == "__main__":
    main()
