"""Bring-your-own logs (CSV / Parquet) through the shared rules."""

import pandas as pd
import pytest

from sidrec.data.canonical import Dataset
from sidrec.data.interactions import import_interactions
from sidrec.errors import SidrecError

# 5 users x 3 items, each user's time order b, a, c except u3 (a, b, c); item "007" has a leading zero
LOG = [(f"u{u}", item, 1000 * u + t) for u in range(5) for t, item in enumerate(["b", "a", "007"] if u != 3 else
                                                                                 ["a", "b", "007"])]
ITEMS = pd.DataFrame({"sku": ["a", "b", "007", "zz"], "name": ["Alpha <b>one</b>", "Beta", "Gamma", None],
                      "categories": ["x|y", "y", "", "z"]})


@pytest.fixture
def csvs(tmp_path):
    log = tmp_path / "log.csv"
    pd.DataFrame(LOG, columns=["uid", "sku", "ts"]).to_csv(log, index=False)
    items = tmp_path / "items.csv"
    ITEMS.to_csv(items, index=False)
    return log, items


def imp(tmp_path, log, items, **kw):
    kw = {"user_col": "uid", "item_col": "sku", "time_col": "ts", "item_id_col": "sku", "title_col": "name",
          "user_k": 3, "item_k": 3, **kw}
    return import_interactions(log, items, tmp_path / "out", **kw)


def test_csv_import(tmp_path, csvs):
    ds = imp(tmp_path, *csvs)
    assert ds.items["asin"].tolist() == ["b", "a", "007"]
    assert ds.items["title"].tolist() == ["Beta", "Alpha one", "Gamma"]
    assert [list(c) for c in ds.items["categories"]] == [["y"], ["x", "y"], []]
    assert ds.counts() == {"num_items": 3, "num_users": 5, "num_train": 8, "num_valid": 1, "num_test": 1}
    assert ds.splits["test"]["history"].tolist() == [[0, 1]] and ds.splits["test"]["target"].tolist() == [2]
    assert ds.splits["train"]["history"].tolist()[:2] == [[0], [0, 1]]
    assert ds.meta["skipped"] == {"items_without_title": 1, "interactions_without_item": 0}
    assert Dataset.load(tmp_path / "out").users["user_raw"].tolist() == ["u0", "u1", "u2", "u3", "u4"]


def test_parquet_with_dates_and_window(tmp_path):
    log = tmp_path / "log.parquet"
    df = pd.DataFrame(LOG, columns=["user", "item", "timestamp"])
    df["timestamp"] = pd.to_datetime("2020-01-01") + pd.to_timedelta(df["timestamp"], unit="D")
    df.to_parquet(log)
    items = tmp_path / "items.parquet"
    ITEMS.rename(columns={"sku": "item_id", "name": "title"}).to_parquet(items)
    ds = import_interactions(log, items, tmp_path / "out", start="2020-01", end="2030-01", user_k=3, item_k=3)
    assert ds.meta["funnel"]["in_window"] == 12  # u4's days 4000-4002 fall in 2030-12
    assert ds.counts() == {"num_items": 3, "num_users": 4, "num_train": 6, "num_valid": 1, "num_test": 1}
    assert ds.splits["test"]["timestamp"].tolist() == [int(pd.Timestamp("2020-01-01").timestamp()) + 3002 * 86400]


def test_missing_column_names_file_and_header_line(tmp_path, csvs):
    with pytest.raises(SidrecError, match=r"log.csv:1: no column 'user' \(columns: uid, sku, ts\); name the right one "
                                          r"with --user-col"):
        imp(tmp_path, *csvs, user_col="user")
    with pytest.raises(SidrecError, match=r"items.csv:1: no column 'title'"):
        imp(tmp_path, *csvs, title_col="title")


def test_empty_cell_and_bad_time_name_the_line(tmp_path, csvs):
    log = tmp_path / "holes.csv"
    log.write_text("uid,sku,ts\nu1,a,5\nu1,,6\n")
    with pytest.raises(SidrecError, match=r"holes.csv:3: empty 'sku'"):
        imp(tmp_path, log, csvs[1])
    log.write_text("uid,sku,ts\nu1,a,5\nu1,b,6\nu1,c,yesterday\n")
    with pytest.raises(SidrecError, match=r"holes.csv:4: 'ts' value 'yesterday' is not a Unix time"):
        imp(tmp_path, log, csvs[1])


def test_duplicate_item_id(tmp_path, csvs):
    items = tmp_path / "dup.csv"
    items.write_text("sku,name\na,A1\nb,B\na,A2\n")
    with pytest.raises(SidrecError, match=r"dup.csv:4: item id 'a' is listed again \(first at .*dup.csv:2\)"):
        imp(tmp_path, csvs[0], items)


def test_empty_after_kcore_and_unknown_items(tmp_path, csvs):
    with pytest.raises(SidrecError, match=r"log.csv: the k-core \(user_k=4, item_k=3\) removed all 15"):
        imp(tmp_path, *csvs, user_k=4)
    items = tmp_path / "other.csv"
    items.write_text("sku,name\nq,Q\n")
    with pytest.raises(SidrecError, match=r"none of the 15 interactions has an item with a usable title in .*other"):
        imp(tmp_path, csvs[0], items)


def test_csv_iso_dates(tmp_path, csvs):
    log = tmp_path / "dates.csv"
    rows = pd.DataFrame(LOG, columns=["uid", "sku", "ts"])
    rows["ts"] = (pd.to_datetime("2021-03-01") + pd.to_timedelta(rows["ts"], unit="s")).dt.strftime("%Y-%m-%d %H:%M:%S")
    rows.to_csv(log, index=False)
    ds = imp(tmp_path, log, csvs[1])
    assert ds.splits["test"]["timestamp"].tolist() == [int(pd.Timestamp("2021-03-01").timestamp()) + 4002]


def test_bad_time_far_down_a_csv(tmp_path, csvs):
    log = tmp_path / "long.csv"
    log.write_text("uid,sku,ts\n" + "u1,a,5\n" * 12_000 + "u1,a,later\n")
    with pytest.raises(SidrecError, match=r"long.csv:12002: 'ts' value 'later'"):
        imp(tmp_path, log, csvs[1])


def test_cleaned_item_table_is_removed_after_success_and_failure(tmp_path, csvs):
    ds = imp(tmp_path, *csvs)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "items.parquet", "manifest.json", "meta.json", "test.parquet", "train.parquet", "users.parquet",
        "valid.parquet"]  # the spill of cleaned item text is gone
    assert isinstance(ds.splits["train"]["history"].dtype, pd.ArrowDtype)  # one Arrow column, no list per row
    with pytest.raises(SidrecError, match="k-core"):
        imp(tmp_path, *csvs, user_k=4)
    assert not (tmp_path / "out" / ".items-cleaned.tmp").exists() and (tmp_path / "out" / "manifest.json").exists()
    with pytest.raises(SidrecError, match="k-core"):
        import_interactions(csvs[0], csvs[1], tmp_path / "new", user_col="uid", item_col="sku", time_col="ts",
                            item_id_col="sku", title_col="name", user_k=4)
    assert not (tmp_path / "new").exists()  # the folder the failed import made is gone with its spill


def test_a_log_too_large_for_memory_is_refused_before_work(tmp_path, csvs, monkeypatch):
    from sidrec.data import interactions

    monkeypatch.setattr(interactions, "available_memory", lambda: 2**20)  # 1 MiB free
    with pytest.raises(SidrecError, match=r"log.csv: ~\d+ interactions need about 0.5 GiB in the data stage, but 0.0 "
                                          r"GiB is available; first cut the log"):
        imp(tmp_path, *csvs)
    assert not (tmp_path / "out").exists()
    log = tmp_path / "log.parquet"
    pd.DataFrame(LOG, columns=["uid", "sku", "ts"]).to_parquet(log)
    monkeypatch.setattr(interactions, "BYTES_PER_INTERACTION", 2**30)  # counted from the Parquet metadata: 15 rows
    monkeypatch.setattr(interactions, "available_memory", lambda: 14 * 2**30)
    with pytest.raises(SidrecError, match=r"log.parquet: 15 interactions need about 15.5 GiB"):
        imp(tmp_path, log, csvs[1])
    monkeypatch.setattr(interactions, "available_memory", lambda: None)  # unknown: no check
    assert imp(tmp_path, log, csvs[1]).counts()["num_train"] == 8
