"""Amazon 2018 raw files -> canonical dataset, on small files whose result can be checked by hand."""

import gzip
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from sidrec.data import amazon18
from sidrec.data.amazon18 import preprocess_amazon18
from sidrec.data.canonical import Dataset
from sidrec.errors import SidrecError


def T(y, m, d):
    return int(datetime(y, m, d, tzinfo=timezone.utc).timestamp())


# (user, asin, time) in file order. With window 2017-01..2018-01 and user_k = item_k = 2:
# D (no title) and E (<span id) are dropped with lines 10 and 17; lines 11 and 16 fall outside the window;
# k-core round 1 drops u4, u5, u7 (one review each), round 2 drops C (only u3 left on it); u1 reviews A twice.
REVIEWS = [
    ("u1", "A", T(2017, 1, 5)), ("u1", "B", T(2017, 2, 1)), ("u1", "A", T(2017, 3, 1)),
    ("u2", "B", T(2017, 1, 10)), ("u2", "A", T(2017, 1, 20)),
    ("u3", "A", T(2017, 4, 1)), ("u3", "B", T(2017, 4, 2)), ("u3", "C", T(2017, 4, 3)),
    ("u4", "C", T(2017, 5, 1)), ("u4", "D", T(2017, 5, 2)),
    ("u5", "A", T(2016, 12, 31)), ("u5", "B", T(2017, 6, 1)),
    ("u6", "B", T(2017, 6, 2)), ("u6", "A", T(2017, 6, 3)),
    ("u7", "A", T(2017, 6, 4)), ("u7", "B", T(2018, 1, 2)),
    ("u8", "E", T(2017, 6, 5)),
] + [("u9", "AB"[i % 2], T(2017, 7, 1 + i)) for i in range(6)]

META_LINES = [
    json.dumps({"asin": "A", "title": "Nitrile Gloves &amp; Box", "brand": "by\nAcme",
                "description": ["<style>.x{color:red}</style><p>Strong &amp; thin.</p>", "Powder free."],
                "category": ["Industrial &amp; Scientific", "Gloves"]}),
    "{'asin': 'B', 'title': '\"Safety Glasses\"', 'description': 'Clear.', 'category': ['Eyewear']}",  # dict literal
    json.dumps({"asin": "C", "title": "Lab Coat"}),
    json.dumps({"asin": "D", "description": "no title"}),
    json.dumps({"asin": "E", "title": '<span id="x">Coat</span>'}),
    "",
    json.dumps({"asin": "F", "title": "X"}),
]


def review_line(u, a, t):
    return json.dumps({"overall": 5.0, "reviewerID": u, "asin": a, "unixReviewTime": t, "reviewText": "ok"})


def write_gz(path: Path, lines) -> Path:
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    return path


@pytest.fixture
def files(tmp_path):
    reviews = write_gz(tmp_path / "Tools_5.json.gz", [review_line(*r) for r in REVIEWS])
    meta = write_gz(tmp_path / "meta_Tools.json.gz", META_LINES)
    return reviews, meta


def run(tmp_path, reviews, meta, **kw):
    kw = {"start": "2017-01", "end": "2018-01", "user_k": 2, "item_k": 2, "max_history": 3, **kw}
    return preprocess_amazon18("Tools", tmp_path / "out", reviews=reviews, meta=meta, progress=False, **kw)


@pytest.mark.parametrize("chunk", [1000, 4])  # 4: several chunks, so both the fast and the careful parser run
def test_preprocess_by_hand(tmp_path, files, monkeypatch, chunk):
    monkeypatch.setattr(amazon18, "CHUNK_LINES", chunk)
    ds = run(tmp_path, *files)
    A, B = 0, 1  # first seen walking u1's time-sorted reviews
    rows = {k: list(zip(df["user"], df["history"], df["target"])) for k, df in ds.splits.items()}
    assert rows["train"] == [(1, [B], A), (0, [A], B), (0, [A, B], A), (2, [A], B), (3, [B], A),
                             (4, [A], B), (4, [A, B], A), (4, [A, B, A], B)]
    assert rows["valid"] == [(4, [B, A, B], A)]
    assert rows["test"] == [(4, [A, B, A], B)]
    assert ds.splits["test"]["timestamp"].tolist() == [T(2017, 7, 6)]
    assert ds.users["user_raw"].tolist() == ["u1", "u2", "u3", "u6", "u9"]

    items = ds.items.set_index("asin")
    assert list(items.index) == ["A", "B"]
    assert items.loc["A", "title"] == "Nitrile Gloves & Box"
    assert items.loc["A", "description"] == "Strong & thin. Powder free."
    assert items.loc["A", "brand"] == "Acme"
    assert list(items.loc["A", "categories"]) == ["Industrial & Scientific", "Gloves"]
    assert items.loc["B", "title"] == "Safety Glasses" and list(items.loc["B", "categories"]) == ["Eyewear"]

    assert ds.meta["kcore"]["rounds"] == 2
    assert ds.meta["skipped"] == {"blank_lines": 1, "meta_no_title": 1, "meta_title_span": 1,
                                  "meta_title_length": 1, "interactions_without_item": 2}
    assert ds.meta["funnel"] == {"interactions_read": 23, "with_titled_item": 21, "in_window": 19, "after_kcore": 15}

    back = Dataset.load(tmp_path / "out")
    assert back.counts() == {"num_items": 2, "num_users": 5, "num_train": 8, "num_valid": 1, "num_test": 1}
    assert back.meta["skipped"]["meta_no_title"] == 1


def test_plain_json_reviews_and_no_window(tmp_path, files):
    plain = tmp_path / "reviews.json"
    plain.write_text("\n".join(review_line(*r) for r in REVIEWS))  # no trailing newline
    ds = run(tmp_path, plain, files[1], start=None, end=None)
    assert ds.meta["funnel"]["in_window"] == 21  # u5's 2016 review and u7's 2018 review stay


# ------------------------------------------------------------------------------------------------ bad input
def test_truncated_gz(tmp_path, files):
    data = files[0].read_bytes()
    cut = tmp_path / "cut_5.json.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SidrecError, match=rf"{cut}:\d+: the gzip file is truncated"):
        run(tmp_path, cut, files[1])


def test_line_not_json(tmp_path, files, monkeypatch):
    monkeypatch.setattr(amazon18, "CHUNK_LINES", 3)  # the bad line is in the third chunk
    lines = [review_line(*r) for r in REVIEWS]
    lines[6] = '{"reviewerID": "u3", "asin": "B"'
    bad = write_gz(tmp_path / "bad_5.json.gz", lines)
    with pytest.raises(SidrecError, match=rf"{bad}:7: not a JSON object"):
        run(tmp_path, bad, files[1])


def test_meta_line_not_json(tmp_path, files):
    bad = write_gz(tmp_path / "meta_bad.json.gz", META_LINES[:2] + ["asin: C"])
    with pytest.raises(SidrecError, match=rf"{bad}:3: not a JSON object"):
        run(tmp_path, files[0], bad)


def test_review_without_time(tmp_path, files):
    lines = [review_line(*r) for r in REVIEWS]
    lines[1] = json.dumps({"reviewerID": "u1", "asin": "B"})
    bad = write_gz(tmp_path / "notime_5.json.gz", lines)
    with pytest.raises(SidrecError, match=rf"{bad}:2: review has no unixReviewTime"):
        run(tmp_path, bad, files[1])


def test_no_item_has_a_title(tmp_path, files):
    meta = write_gz(tmp_path / "meta_none.json.gz", META_LINES[3:])
    with pytest.raises(SidrecError, match=r"none of the 23 interactions has an item with a usable title in .*"
                                          r"meta_title_span 1"):
        run(tmp_path, files[0], meta)


def test_window_empties_it(tmp_path, files):
    with pytest.raises(SidrecError, match=r"Tools_5.json.gz: the time window 2019-01..2019-06 removed all 21 "
                                          r"interactions \(their timestamps run from 2016-12-31 to 2018-01-02\)"):
        run(tmp_path, *files, start="2019-01", end="2019-06")


def test_kcore_empties_it(tmp_path, files):
    with pytest.raises(SidrecError, match=r"Tools_5.json.gz: the k-core \(user_k=2, item_k=50\) removed all 19"):
        run(tmp_path, *files, item_k=50)


def test_missing_file_and_bad_month(tmp_path, files):
    with pytest.raises(SidrecError, match="nope.json.gz: file does not exist"):
        run(tmp_path, tmp_path / "nope.json.gz", files[1])
    with pytest.raises(SidrecError, match="start='2017': expected a month like 2016-10"):
        run(tmp_path, *files, start="2017")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_cli_amazon18_then_truncated_input_is_one_line(tmp_path, files):
    import subprocess
    import sys

    def sidrec(*args):
        return subprocess.run([sys.executable, "-m", "sidrec", *map(str, args)], capture_output=True, text=True,
                              timeout=120)

    common = ["--category", "Tools", "--start", "2017-01", "--end", "2018-01", "--user-k", "2", "--item-k", "2",
              "--no-progress"]
    r = sidrec("data", "amazon18", "--reviews", files[0], "--meta", files[1], "--out", tmp_path / "cli", *common)
    assert r.returncode == 0, r.stderr
    assert Dataset.load(tmp_path / "cli").counts() == run(tmp_path, *files, max_history=10).counts()
    cut = tmp_path / "cut_5.json.gz"
    cut.write_bytes(files[0].read_bytes()[:100])
    r = sidrec("data", "amazon18", "--reviews", cut, "--meta", files[1], "--out", tmp_path / "bad", *common)
    assert r.returncode == 2 and "Traceback" not in r.stderr and str(cut) in r.stderr
    assert not (tmp_path / "bad" / "manifest.json").exists()
