"""make_samples orders the samples and bounds their histories with polars, then gathers them into one Arrow list
column; these check it against the per-sample numpy/list algorithm it replaced (kept here as the reference), on
random logs."""

import numpy as np
import pandas as pd
import polars as pl
import pytest

from sidrec.data.preprocess import build_dataset, chrono_split, make_samples, number


def reference_samples(inter: pl.DataFrame, max_history: int) -> pd.DataFrame:
    """The previous make_samples: one Python list per sample sliced from the (uid, timestamp)-sorted item array."""
    uid, iid, ts = (inter[c].to_numpy().astype(np.int64) for c in ("uid", "iid", "timestamp"))
    n = len(uid)
    first = np.r_[True, uid[1:] != uid[:-1]] if n else np.zeros(0, bool)
    user_start = np.maximum.accumulate(np.where(first, np.arange(n), 0)) if n else np.zeros(0, np.int64)
    target = np.flatnonzero(~first)
    target = target[np.argsort(ts[target], kind="stable")]
    begin = np.maximum(user_start[target], target - max_history)
    return pd.DataFrame({"user": uid[target], "history": [iid[b:t].tolist() for b, t in zip(begin, target)],
                         "target": iid[target], "timestamp": ts[target]})


def random_log(seed: int) -> pl.DataFrame:
    """Users with 1..30 interactions, few distinct times (many ties), repeat items, users interleaved in the file."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 31, rng.integers(5, 40))
    users = np.repeat([f"u{u}" for u in rng.permutation(len(counts))], counts)
    n = len(users)
    order = rng.permutation(n)
    return pl.DataFrame({"user": users[order], "item": [f"i{i}" for i in rng.integers(0, 300, n)],
                         "timestamp": rng.integers(0, 12, n).astype(np.int64), "row": np.arange(n)})


def assert_same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns)
    for col in ("user", "target", "timestamp"):
        assert got[col].dtype == np.int64
        np.testing.assert_array_equal(got[col].to_numpy(), want[col].to_numpy())
    assert got["history"].tolist() == want["history"].tolist()
    assert all(type(h) is list and all(type(x) is int for x in h) for h in got["history"])


@pytest.mark.parametrize("seed", range(12))
def test_samples_and_split_match_the_reference(seed):
    inter = number(random_log(seed))
    for max_history in range(1, 11):
        got, want = make_samples(inter, max_history), reference_samples(inter, max_history)
        assert len(got) == inter.height - inter["uid"].n_unique()
        assert_same(got, want)
        assert_same(make_samples(inter, max_history, chunk=7), want)  # lists made a few samples at a time
        for name, part in chrono_split(got).items():
            assert_same(part.reset_index(drop=True), chrono_split(want)[name].reset_index(drop=True))


def test_histories_are_one_arrow_column():
    # one user, 300 distinct items then two repeats of item 299; made 50 samples at a time (several Arrow chunks)
    items = [f"i{k}" for k in range(300)] + ["i299", "i299"]
    inter = number(pl.DataFrame({"user": ["a"] * 302, "item": items, "timestamp": range(302), "row": range(302)}))
    col = make_samples(inter, 3, chunk=50)["history"]
    assert isinstance(col.dtype, pd.ArrowDtype)  # flat ids + offsets: no Python list or int object per sample
    h = col.tolist()
    assert h[-1] == [298, 299, 299] and h[-2] == [297, 298, 299] and h[0] == [0] and h[2] == [0, 1, 2]
    assert col.iloc[-1] == [298, 299, 299] and [len(x) for x in col][:4] == [1, 2, 3, 3]
    assert col.array.nbytes <= 8 * sum(map(len, h)) + 4 * (len(h) + 7) + 64  # 8 bytes an item, 4 a row


def test_build_dataset_matches_the_reference_split():
    rng = np.random.default_rng(7)
    inter = random_log(7)
    names = inter["item"].unique().sort()
    items = pl.DataFrame({"item": names, "title": [f"t {x}" for x in names], "description": "", "brand": "",
                          "categories": [[]] * names.len()}, schema_overrides={"categories": pl.List(pl.String)})
    max_history = int(rng.integers(1, 11))
    ds = build_dataset(inter, items, source="log", items_source="items", name="t", start=None, end=None, user_k=1,
                       item_k=1, max_history=max_history)
    want = chrono_split(reference_samples(number(inter), max_history))
    for name in ("train", "valid", "test"):
        assert_same(ds.splits[name], want[name].reset_index(drop=True))
