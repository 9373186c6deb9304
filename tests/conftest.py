import os
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_INDUSTRIAL = ROOT.parent / "shared" / "data" / "amazon18" / "Industrial_and_Scientific"


def tiny_frames(num_items: int = 6):
    """A hand-checkable dataset: 6 items, 3 users, a few rows per split."""
    items = pd.DataFrame({
        "item_id": range(num_items),
        "title": [f"item {i}" for i in range(num_items)],
        "description": ["['a list', 'of text']"] + [""] * (num_items - 1),
        "brand": ["b"] * num_items,
        "categories": [["Tools"]] * num_items,
    })
    splits = {
        "train": pd.DataFrame({"user": [0, 0, 1], "history": [[0], [0, 1], [2]], "target": [1, 2, 3]}),
        "valid": pd.DataFrame({"user": [0], "history": [[0, 1, 2]], "target": [4]}),
        "test": pd.DataFrame({"user": [1, 2], "history": [[2, 3], [5]], "target": [5, 0]}),
    }
    return items, splits


@pytest.fixture
def shared_industrial():
    if not SHARED_INDUSTRIAL.exists():
        pytest.skip(f"real data not found at {SHARED_INDUSTRIAL}")
    return SHARED_INDUSTRIAL
