"""Rules shared by every raw-data importer: text cleaning, time window, k-core, samples and the chronological split.

`amazon18.preprocess_amazon18` and `interactions.import_interactions` only read their files; each reduces them to an
interactions table (user:str, item:str, timestamp:int64 seconds, row: position in the source file) and an item table
(item:str, title, description, brand, categories) and hands both to `build_dataset`, so the rules live here once.

The rules are MiniOneRec's (`data/amazon18_data_process.py`), with its defects fixed (see `clean_text`):

1. interactions whose item has no usable title are dropped;
2. time window: keep `start <= timestamp <= end`, where `start`/`end` are the first second (UTC) of the given months,
   exactly MiniOneRec's comparison (so `end="2018-11"` keeps reviews up to 2018-11-01 00:00:00 UTC). The window is
   applied before any counting, so the k-core sees only in-window interactions, as in MiniOneRec's loop;
3. iterative k-core: users with fewer than `user_k` and items with fewer than `item_k` interactions are dropped, and
   again, until nothing is dropped. Repeat interactions are kept and count;
4. ids: users dense in order of first appearance in the source file, items dense in first-seen order when walking
   the users in that order, each user's interactions time-sorted (stable, so same-second ties keep file order);
5. samples: per user, one sample for every position i >= 1 with history = the previous min(i, max_history) items;
6. split: all samples stably sorted by target timestamp and cut globally 8:1:1 with MiniOneRec's integer arithmetic
   train = [0, int(n*0.8)), valid = [int(n*0.8), int(n*0.9)), test = [int(n*0.9), n).
"""

from __future__ import annotations

import html
import re
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa

from sidrec.data.canonical import HISTORY_TYPE, SPLITS, Dataset, history_array
from sidrec.errors import SidrecError

TITLE_MAX_WORDS = 20
SPLIT_RULE = "stable sort by target timestamp; train=[0,int(n*0.8)), valid=[int(n*0.8),int(n*0.9)), test=rest"

_BLOCK = re.compile(r"<(style|script)\b.*?</\1\s*>", re.S | re.I)  # their content is CSS/JS, not text
_TAG = re.compile(r"<[^<>]*>")
_SPACE = re.compile(r"\s+")


# ---------------------------------------------------------------------------------------------------- text
def clean_text(text) -> str:
    """Plain text from an Amazon field: lists joined (MiniOneRec kept `str(list)` brackets), <style>/<script> blocks,
    tags and HTML entities removed, whitespace collapsed."""
    if text is None:
        return ""
    if isinstance(text, (list, tuple)):
        text = " ".join(clean_text(t) for t in text)
    text = html.unescape(_TAG.sub(" ", _BLOCK.sub(" ", str(text))))
    text = _TAG.sub(" ", _BLOCK.sub(" ", text))  # entity-escaped markup (&lt;b&gt;) shows up once unescaped
    return _SPACE.sub(" ", text).strip()


def amazon_title(raw) -> tuple[str | None, str | None]:
    """MiniOneRec's title rule: returns (title, None) or (None, reason) with reason one of
    `no_title`, `title_span` (contains '<span id'), `title_length` (<= 1 char or > 20 words after cleaning)."""
    if not isinstance(raw, str):
        return None, "no_title"
    if "<span id" in raw:
        return None, "title_span"
    title = raw.replace("&quot;", '"').replace("&amp;", "&").strip(" ").strip('"')
    if len(title) <= 1 or len(title.split(" ")) > TITLE_MAX_WORDS:
        return None, "title_length"
    return title, None


# ---------------------------------------------------------------------------------------------------- window
def month_start(month: str, what: str = "month") -> int:
    """'2016-10' -> the Unix time of 2016-10-01 00:00:00 UTC."""
    m = re.fullmatch(r"\s*(\d{4})-(\d{1,2})\s*", str(month))
    if not m or not 1 <= int(m[2]) <= 12:
        raise SidrecError(f"{what}={month!r}: expected a month like 2016-10")
    return int(datetime(int(m[1]), int(m[2]), 1, tzinfo=timezone.utc).timestamp())


# Unix times in other units, by magnitude: seconds stay below 1e11 until the year 5138, milliseconds since 1973 are
# above it, and so on. A column is read in the one unit all its values share.
TIME_UNITS = (("s", 1e11, 1), ("ms", 1e14, 10**3), ("us", 1e17, 10**6), ("ns", float("inf"), 10**9))


def to_seconds(t: pl.Series, where) -> tuple[pl.Series, str]:
    """Integer Unix times in s, ms, us or ns (detected from their size) -> seconds, and the unit found.

    Null values stay null. Mixed units are a SidrecError: `where(row)` names the first value in a minority unit."""
    size = t.cast(pl.Float64).abs()
    unit = pl.Series(np.searchsorted([b for _, b, _ in TIME_UNITS], size.fill_null(0).to_numpy(), side="right"))
    unit = unit.set(size.is_null(), None) if size.null_count() else unit
    counts = unit.drop_nulls().value_counts(sort=True)
    if counts.height == 0:
        return t.cast(pl.Int64), "s"
    major = int(counts[0, 0])
    if counts.height > 1:
        r = int((unit.fill_null(major) != major).arg_max())
        raise SidrecError(f"{where(r)}: time {t[r]} looks like Unix {TIME_UNITS[int(unit[r])][0]} but most values "
                          f"are in {TIME_UNITS[major][0]} ({counts[0, 1]} of {unit.len()}); use one unit for the "
                          f"column")
    name, _, scale = TIME_UNITS[major]
    return (t.cast(pl.Int64) // scale), name


def window_bounds(start: str | None, end: str | None) -> tuple[int | None, int | None]:
    lo = month_start(start, "start") if start else None
    hi = month_start(end, "end") if end else None
    if lo is not None and hi is not None and lo > hi:
        raise SidrecError(f"time window start={start} is after end={end}")
    return lo, hi


def apply_window(inter: pl.DataFrame, lo: int | None, hi: int | None) -> pl.DataFrame:
    if lo is not None:
        inter = inter.filter(pl.col("timestamp") >= lo)
    if hi is not None:
        inter = inter.filter(pl.col("timestamp") <= hi)
    return inter


# ---------------------------------------------------------------------------------------------------- k-core
def kcore(inter: pl.DataFrame, user_k: int, item_k: int) -> tuple[pl.DataFrame, int]:
    """Iterative k-core; returns the surviving interactions (order kept) and the number of rounds that dropped some.

    Users and items are dropped in the same round, as in MiniOneRec; the result is the unique largest subset in which
    every user has >= user_k and every item >= item_k interactions, whatever the order of dropping.
    """
    rounds = 0
    while True:
        few_users = inter.group_by("user").len().filter(pl.col("len") < user_k)["user"]
        few_items = inter.group_by("item").len().filter(pl.col("len") < item_k)["item"]
        if few_users.len() == 0 and few_items.len() == 0:
            return inter, rounds
        inter = inter.filter(~pl.col("user").is_in(few_users.implode()) & ~pl.col("item").is_in(few_items.implode()))
        rounds += 1


# ---------------------------------------------------------------------------------------------------- samples
def number(inter: pl.DataFrame) -> pl.DataFrame:
    """Add dense `uid`/`iid` and sort by (uid, timestamp, row): users by first appearance in the file, items by first
    appearance in that sorted order (MiniOneRec's `item2index`)."""
    inter = inter.sort("row").with_columns(uid=pl.col("row").min().over("user").rank("dense") - 1)
    inter = inter.sort("uid", "timestamp", "row").with_columns(pos=pl.int_range(pl.len()))
    return inter.with_columns(iid=pl.col("pos").min().over("item").rank("dense") - 1).drop("pos")


def make_samples(inter: pl.DataFrame, max_history: int, chunk: int = 1_000_000) -> pd.DataFrame:
    """One sample per interaction after each user's first, in stable target-timestamp order.

    `inter` must come from `number` (sorted by uid, timestamp). polars orders the samples and gives each its
    history's bounds in `inter` (the previous up-to-`max_history` rows of the same user); the histories are then
    gathered from the item column into one Arrow list column (`canonical.history_array`), `chunk` samples at a
    time, so no Python object is made per sample or per history item.
    """
    samples = (inter.lazy().with_row_index("end")
               .with_columns(pos=pl.int_range(pl.len(), dtype=pl.Int64).over("uid"))  # place in the user's log
               .filter(pl.col("pos") > 0)
               .select(user=pl.col("uid").cast(pl.Int64), target=pl.col("iid").cast(pl.Int64),
                       timestamp=pl.col("timestamp").cast(pl.Int64), end=pl.col("end").cast(pl.Int64),
                       begin=pl.col("end").cast(pl.Int64) - pl.min_horizontal("pos", max_history))
               .sort("timestamp", maintain_order=True)  # stable: ties stay in (user, time) order
               .collect())
    iid = inter["iid"].to_numpy().astype(np.int64)
    begin, end = samples["begin"].to_numpy(), samples["end"].to_numpy()
    samples = samples.drop("begin", "end")
    parts = []
    chunk = max(1, min(chunk, (2**31 - 1) // max_history))  # a chunk's flat ids fit the list type's int32 offsets
    for a in range(0, len(begin), chunk):
        b, length = begin[a:a + chunk], end[a:a + chunk] - begin[a:a + chunk]
        offsets = np.concatenate([[0], np.cumsum(length)])
        flat = iid[np.repeat(b - offsets[:-1], length) + np.arange(offsets[-1])]  # history r = iid[b[r]:end[r]]
        parts.append(pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat)))
    history = pa.chunked_array(parts, type=HISTORY_TYPE)
    return pd.DataFrame({"user": samples["user"].to_numpy(), "history": history_array(history),
                         "target": samples["target"].to_numpy(), "timestamp": samples["timestamp"].to_numpy()})


def chrono_split(samples: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """MiniOneRec's global 8:1:1 cut of time-sorted samples (see the module docstring for the arithmetic)."""
    n = len(samples)
    a, b = int(n * 0.8), int(n * 0.9)
    return {"train": samples.iloc[:a], "valid": samples.iloc[a:b], "test": samples.iloc[b:]}


# ---------------------------------------------------------------------------------------------------- all of it
def build_dataset(inter: pl.DataFrame, items: pl.DataFrame | pl.LazyFrame, *, source: str, items_source: str,
                  name: str, start: str | None, end: str | None, user_k: int, item_k: int, max_history: int,
                  skipped: dict | None = None, meta: dict | None = None) -> Dataset:
    """Apply the rules above to `inter` (user, item, timestamp, row) and `items` (item, title, description, brand,
    categories; one row per usable item) and return the canonical Dataset.

    Memory: the user and item id strings become integer codes first (the item join is also the usable-title
    filter), so the window, the k-core and the numbering run on four integer columns; `items` may be a LazyFrame
    (e.g. a scan of a Parquet file), of which only the item ids are read until the end, and then only the text of the
    items that survive the k-core. Pass `inter` as a temporary (`build_dataset(read_log(...), ...)`): then the
    frame with the id strings is freed once coded.

    `source`/`items_source` name the files in error messages. Raises SidrecError naming the step that left nothing.
    """
    if user_k < 1 or item_k < 1 or max_history < 1:
        raise SidrecError(f"user_k={user_k}, item_k={item_k}, max_history={max_history}: each must be >= 1")
    lo, hi = window_bounds(start, end)
    skipped = dict(skipped or {})
    funnel = {"interactions_read": inter.height}
    if inter.height == 0:
        raise SidrecError(f"{source}: no interactions in the file")

    items = items.lazy()
    codes = items.select("item").with_row_index("code").collect()  # an item's code: its row in `items`
    n = inter.height
    inter = inter.join(codes, on="item", how="inner", maintain_order="left").drop("item")
    skipped["interactions_without_item"] = n - inter.height
    funnel["with_titled_item"] = inter.height
    if inter.height == 0:
        raise SidrecError(f"{source}: none of the {n} interactions has an item with a usable title in {items_source} "
                          f"(item ids must match; item rows skipped: {_skips(skipped)})")
    user_names = inter.group_by("user").agg(first=pl.col("row").min())  # a user's code: their first row
    inter = inter.select(user=pl.col("row").min().over("user"), item="code", timestamp="timestamp", row="row")

    n, t_min, t_max = inter.height, inter["timestamp"].min(), inter["timestamp"].max()
    inter = apply_window(inter, lo, hi)
    funnel["in_window"] = inter.height
    if inter.height == 0:
        raise SidrecError(f"{source}: the time window {start or '-'}..{end or '-'} removed all {n} interactions "
                          f"(their timestamps run from {_day(t_min)} to {_day(t_max)}); widen --start/--end")

    n = inter.height
    inter, rounds = kcore(inter, user_k, item_k)
    funnel["after_kcore"] = inter.height
    if inter.height == 0:
        raise SidrecError(f"{source}: the k-core (user_k={user_k}, item_k={item_k}) removed all {n} interactions "
                          f"left after the time window; lower --user-k/--item-k or widen the window")

    inter = number(inter)
    item_code = inter.unique("iid").sort("iid")["item"]
    user_code = inter.unique("uid").sort("uid")["user"]
    inter = inter.select("uid", "iid", "timestamp")
    samples = make_samples(inter, max_history)
    num_interactions = inter.height
    del inter
    splits = chrono_split(samples)
    if any(len(df) == 0 for df in splits.values()):
        sizes = ", ".join(f"{k} {len(v)}" for k, v in splits.items())
        raise SidrecError(f"{source}: only {len(samples)} samples after filtering ({sizes}); every split of the 8:1:1 "
                          f"cut needs at least one; lower --user-k/--item-k or widen the window")

    kept = (items.with_row_index("code").filter(pl.col("code").is_in(item_code.implode()))
            .collect(engine="streaming"))  # the text of the surviving items only
    catalogue = pl.DataFrame({"code": item_code}).join(kept, on="code", how="left", maintain_order="left")
    items_df = catalogue.drop("code").rename({"item": "asin"}).with_columns(item_id=pl.int_range(pl.len(),
                                                                                                 dtype=pl.Int64))
    items_df = items_df.to_pandas()
    items_df["categories"] = [list(c) if c is not None else [] for c in items_df["categories"]]
    user_raw = (pl.DataFrame({"first": user_code})
                .join(user_names, on="first", how="left", maintain_order="left")["user"])
    users = pd.DataFrame({"user": np.arange(len(user_raw), dtype=np.int64), "user_raw": user_raw.to_list()})

    meta = {
        "name": name,
        **(meta or {}),
        "max_history": max_history,
        "window": {"start": start, "end": end, "start_ts": lo, "end_ts": hi,
                   "rule": "start_ts <= timestamp <= end_ts (first second of each month, UTC)"},
        "kcore": {"user_k": user_k, "item_k": item_k, "rounds": rounds},
        "split": SPLIT_RULE,
        "num_interactions": num_interactions,
        "funnel": funnel,
        "skipped": skipped,
    }
    return Dataset.from_frames(items_df, {k: splits[k] for k in SPLITS}, users=users, meta=meta)


def _day(ts) -> str:
    return datetime.fromtimestamp(int(ts), timezone.utc).strftime("%Y-%m-%d")


def _skips(skipped: dict) -> str:
    parts = [f"{k} {v}" for k, v in skipped.items() if v]
    return ", ".join(parts) or "none"
