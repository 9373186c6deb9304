"""The shared rules, on tables small enough to check by hand."""

import polars as pl
import pytest

from sidrec.data.preprocess import (amazon_title, apply_window, build_dataset, chrono_split, clean_text, kcore,
                                    make_samples, month_start, number)
from sidrec.errors import SidrecError

DAY = 86_400


def inter(rows):
    """rows: (user, item, timestamp) in file order."""
    return pl.DataFrame({"user": [r[0] for r in rows], "item": [r[1] for r in rows],
                         "timestamp": [r[2] for r in rows]}).with_row_index("row")


def items(names):
    return pl.DataFrame({"item": names, "title": [f"Title {n}" for n in names], "description": [""] * len(names),
                         "brand": [""] * len(names), "categories": [[] for _ in names]},
                        schema_overrides={"categories": pl.List(pl.String)})


def test_clean_text_fixes_minionerec_description_defects():
    desc = ["<style>.a{color:red}</style><p>Strong &amp; light</p>", "Fits <b>all</b>&nbsp;models"]
    assert clean_text(desc) == "Strong & light Fits all models"
    assert clean_text("&lt;b&gt;bold&lt;/b&gt;") == "bold"
    assert clean_text(None) == "" and clean_text([]) == ""


def test_amazon_title_rule():
    assert amazon_title('"Gloves &amp; Mask &quot;XL&quot;"') == ('Gloves & Mask "XL', None)
    assert amazon_title(None) == (None, "no_title")
    assert amazon_title('<span id="x">Glove</span>') == (None, "title_span")
    assert amazon_title("A") == (None, "title_length")
    assert amazon_title(" ".join(["w"] * 21)) == (None, "title_length")
    assert amazon_title(" ".join(["w"] * 20))[1] is None


def test_window_is_inclusive_month_starts_in_utc():
    assert month_start("2016-10") == 1475280000  # 2016-10-01T00:00:00Z
    lo, hi = month_start("2016-10"), month_start("2016-11")
    df = inter([("u", "a", lo - 1), ("u", "a", lo), ("u", "a", hi), ("u", "a", hi + 1)])
    assert apply_window(df, lo, hi)["timestamp"].to_list() == [lo, hi]
    with pytest.raises(SidrecError, match="2016/10"):
        month_start("2016/10", "start")


def test_kcore_iterates_until_stable():
    # round 1 drops u4 (1 review); then c has 1 review -> round 2 drops c; then u3 has 1 -> round 3 drops u3
    df = inter([("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 3), ("u2", "b", 4), ("u3", "a", 5), ("u3", "c", 6),
                ("u4", "c", 7)])
    kept, rounds = kcore(df, 2, 2)
    assert rounds == 3
    assert kept["row"].to_list() == [0, 1, 2, 3]


def test_kcore_honours_user_k_and_item_k_separately_and_counts_duplicates():
    df = inter([("u1", "a", 1), ("u1", "a", 2), ("u1", "b", 3), ("u2", "a", 4), ("u2", "c", 5)])
    kept, _ = kcore(df, 3, 1)  # u2 has 2 < 3; items need only 1
    assert kept["row"].to_list() == [0, 1, 2]  # the repeat of a is kept and counted
    kept, _ = kcore(df, 1, 2)  # items b, c have 1 < 2; then users keep what is left
    assert kept["row"].to_list() == [0, 1, 3]


def test_ids_samples_and_histories():
    # u2 appears first in the file; u1's reviews are out of time order in the file; item z is reviewed twice
    df = inter([("u2", "y", 10), ("u1", "z", 30), ("u1", "x", 5), ("u2", "z", 20), ("u1", "z", 40), ("u1", "w", 50)])
    df = number(df)
    assert df["user"].to_list() == ["u2", "u2", "u1", "u1", "u1", "u1"]
    assert df["item"].to_list() == ["y", "z", "x", "z", "z", "w"]
    assert df["iid"].to_list() == [0, 1, 2, 1, 1, 3]
    s = make_samples(df, max_history=2)
    assert s["timestamp"].tolist() == [20, 30, 40, 50]
    assert s["user"].tolist() == [0, 1, 1, 1]
    assert s["history"].tolist() == [[0], [2], [2, 1], [1, 1]]
    assert s["target"].tolist() == [1, 1, 1, 3]


def test_samples_sort_is_stable_on_timestamp_ties():
    df = number(inter([("u1", "a", 1), ("u2", "a", 1), ("u1", "b", 5), ("u2", "b", 5)]))
    s = make_samples(df, 10)
    assert s["user"].tolist() == [0, 1]  # same target time: user order, then position


@pytest.mark.parametrize("n,sizes", [(10, (8, 1, 1)), (19, (15, 2, 2)), (45324, (36259, 4532, 4533))])
def test_split_uses_minionerec_integer_cuts(n, sizes):
    import pandas as pd
    parts = chrono_split(pd.DataFrame({"x": range(n)}))
    assert tuple(len(parts[k]) for k in ("train", "valid", "test")) == sizes
    assert parts["valid"]["x"].iloc[0] == sizes[0]


def test_build_dataset_end_to_end_and_empty_errors():
    rows = [(f"u{u}", it, 100 * u + t) for u in range(6) for t, it in enumerate("abc")]
    ds = build_dataset(inter(rows), items(["a", "b", "c"]), source="log.csv", items_source="items.csv", name="t",
                       start=None, end=None, user_k=3, item_k=3, max_history=10)
    assert ds.counts() == {"num_items": 3, "num_users": 6, "num_train": 9, "num_valid": 1, "num_test": 2}
    assert ds.items["asin"].tolist() == ["a", "b", "c"] and ds.items["item_id"].tolist() == [0, 1, 2]
    assert ds.meta["kcore"] == {"user_k": 3, "item_k": 3, "rounds": 0}
    kw = dict(source="log.csv", items_source="items.csv", name="t", start=None, end=None, max_history=10)
    with pytest.raises(SidrecError, match="k-core .*user_k=4"):
        build_dataset(inter(rows), items(["a", "b", "c"]), user_k=4, item_k=1, **kw)
    with pytest.raises(SidrecError, match="usable title in items.csv"):
        build_dataset(inter(rows), items(["q"]), user_k=1, item_k=1, **kw)
    with pytest.raises(SidrecError, match="only 4 samples .*valid 0"):
        build_dataset(inter(rows[:6]), items(["a", "b", "c"]), user_k=1, item_k=1, **kw)
