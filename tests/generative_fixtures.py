"""A tiny catalogue with a learnable rule (item i is followed by item i+1), for SFT/eval/RL tests."""

import json

import numpy as np
import pandas as pd

from sidrec.data import Dataset

NUM_ITEMS = 12


def toy_codes(n=NUM_ITEMS):
    # a = i % 3, b = i % 4 (unique pair for i < 12), c = i % 2: each level of the next item's SID follows from the
    # same level of the last item's SID, a rule a tiny model learns in a few hundred steps
    return np.array([[i % 3, i % 4, i % 2] for i in range(n)])


def make_toy(folder, n_users=80, seq_len=6, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        start = int(rng.integers(NUM_ITEMS))
        seq = [(start + k) % NUM_ITEMS for k in range(seq_len)]
        for i in range(1, seq_len):
            rows.append((u, seq[max(0, i - 10):i], seq[i], u * 100 + i))
    rows.sort(key=lambda r: r[3])
    df = pd.DataFrame(rows, columns=["user", "history", "target", "timestamp"])
    n = len(df)
    splits = {"train": df.iloc[: int(n * 0.8)], "valid": df.iloc[int(n * 0.8): int(n * 0.9)],
              "test": df.iloc[int(n * 0.9):]}
    items = pd.DataFrame({"item_id": range(NUM_ITEMS), "title": [f"widget number {i}" for i in range(NUM_ITEMS)]})
    Dataset.from_frames(items, splits, meta={"name": "toy"}).save(folder / "data")
    sids = folder / "sids"
    sids.mkdir(parents=True, exist_ok=True)
    codes = toy_codes()
    index = {str(i): [f"<{'abc'[l]}_{c}>" for l, c in enumerate(row)] for i, row in enumerate(codes.tolist())}
    (sids / "index.json").write_text(json.dumps(index))
    return folder / "data", sids


TINY = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 128,
        "vocab_size": 300, "dropout": 0.0}


def train_toy_sft(root, epochs: int, eval_steps: int = 1000):
    """The toy catalogue under `root` and a tiny seq-rec SFT model trained on it: (data, sids, model_dir)."""
    from sidrec.train.sft import SftConfig, run_sft

    data, sids = make_toy(root)
    cfg = SftConfig(small=TINY, epochs=epochs, batch_size=32, micro_batch_size=32, learning_rate=5e-3,
                    eval_steps=eval_steps, early_stopping_patience=None, cutoff_len=128, seed=0,
                    tasks={"seqrec": 1.0})
    return data, sids, run_sft(cfg, data, sids, root / "sft")
