"""Bring-your-own logs: an interactions table and an item table (CSV or Parquet) -> canonical dataset.

The same rules as the Amazon path (`sidrec.data.preprocess`): window, iterative k-core, samples, 8:1:1 split.
Item titles are cleaned of HTML but not held to Amazon's length rule.

Memory: the item table is cleaned 100k rows at a time into Parquet parts beside the output (`.items-cleaned.tmp`,
removed at the end), and `build_dataset` reads back the text of the items that survive the k-core only; the log is
read whole (user, item, time) and coded to integers first (cost against size: docs/benchmarks.md, "Scale").

Bad input policy:
- errors (SidrecError naming file:line, or file:row for Parquet): a missing column, an empty user/item/time cell, a
  time that is neither an integer Unix time nor a date/datetime, integer times in mixed units (s, ms, us and ns are
  told apart by size and converted to seconds; `meta["time_unit"]` says which), an item id listed twice;
- counted skips (in `meta["skipped"]`): items without a title (`items_without_title`) and interactions whose item is
  not in the items file or has no title (`interactions_without_item`).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from sidrec.data.canonical import Dataset
from sidrec.data.preprocess import build_dataset, clean_text, to_seconds
from sidrec.errors import SidrecError
from sidrec.io import available_memory, check_file

CATEGORY_SEP = "|"  # how a CSV cell lists several categories
# peak memory per interaction of the whole import, rounded up from the Parquet import at 10^8 interactions with
# 10^7 items (docs/benchmarks.md, "Scale"); with a fixed 0.5 GiB it is the estimate checked before any work
BYTES_PER_INTERACTION = 160


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def _scan(path: Path, text_cols: list[str]) -> pl.LazyFrame:
    check_file(path)
    try:
        if _is_parquet(path):
            lf = pl.scan_parquet(path)
        else:  # ids stay text: "007" and "7" are different items
            lf = pl.scan_csv(path, separator="\t" if path.suffix.lower() == ".tsv" else ",",
                             infer_schema_length=10_000, schema_overrides=dict.fromkeys(text_cols, pl.String))
        lf.collect_schema()
    except Exception as e:  # noqa: BLE001 - polars' own message is the useful part
        raise SidrecError(f"{path}: cannot read as {'Parquet' if _is_parquet(path) else 'CSV'} "
                          f"({str(e).splitlines()[0]})") from None
    return lf


def _where(path: Path, row: int) -> str:
    """Where data row `row` (0-based) sits: a line for CSV (the header is line 1), a row for Parquet."""
    return f"{path}: row {row}" if _is_parquet(path) else f"{path}:{row + 2}"


def _select(path: Path, need: dict[str, str], optional: dict[str, str | None], ids: list[str],
            text: tuple[str, ...] = ()) -> pl.LazyFrame:
    """Columns `need` (option name -> column) and those of `optional` that are not None, named by option, and `row`.
    `ids` are read as text, and so are `text` in CSV (so a bad cell deep in the file is reported by line, not by
    polars' type inference)."""
    lf = _scan(path, [need[k] for k in (*ids, *text)])
    names = lf.collect_schema().names()
    for option, col in need.items():
        if col not in names:
            where = str(path) if _is_parquet(path) else f"{path}:1"
            raise SidrecError(f"{where}: no column '{col}' (columns: {', '.join(names)}); name the right one with "
                              f"--{option.replace('_', '-')}")
    cols = dict(need)
    for option, col in optional.items():
        if col is not None:
            if col not in names:
                raise SidrecError(f"{path}: no column '{col}' (columns: {', '.join(names)}); check "
                                  f"--{option.replace('_', '-')}")
            cols[option] = col
    return (lf.select([pl.col(c).alias(o) for o, c in cols.items()]).with_row_index("row")
            .with_columns([pl.col(o).cast(pl.String) for o in ids]))  # Parquet ids may be ints


def _read(path: Path, need: dict[str, str], optional: dict[str, str | None], ids: list[str],
          nonempty: list[str], text: tuple[str, ...] = ()) -> pl.DataFrame:
    """`_select`'s columns, read whole; `nonempty` must have a value in every row."""
    lf = _select(path, need, optional, ids, text)
    try:
        df = lf.collect()
    except Exception as e:  # noqa: BLE001
        raise SidrecError(f"{path}: cannot read ({str(e).splitlines()[0]})") from None
    for option in nonempty:
        empty = df[option].is_null() | (df[option].cast(pl.String) == "")
        if empty.any():
            r = int(empty.arg_max())
            raise SidrecError(f"{_where(path, r)}: empty '{need[option]}' ({int(empty.sum())} such rows); every "
                              f"row needs it")
    return df


def _epoch_seconds(df: pl.DataFrame, path: Path, col: str) -> tuple[pl.DataFrame, str]:
    """Times as Unix seconds, and the unit they came in: integer Unix times in s, ms, us or ns (told apart by size,
    so --start/--end compare like with like) or dates/datetimes ("date")."""
    t = df["timestamp"]
    if t.dtype == pl.Date or isinstance(t.dtype, pl.Datetime):
        secs, unit = t.dt.epoch("s"), "date"  # time-zone aware ones count from UTC too
    else:
        ints = t.cast(pl.Int64, strict=False)  # floats truncate; text that is no integer becomes null
        secs, unit = to_seconds(ints, lambda r: _where(path, r)) if ints.drop_nulls().len() else (ints, "date")
        if t.dtype == pl.String and secs.is_null().any():
            try:  # text: ISO dates
                secs = secs.fill_null(t.str.to_datetime(strict=False).dt.epoch("s"))
            except pl.exceptions.PolarsError:  # no common date format: the unparsed cells are reported below
                pass
    bad = secs.is_null()
    if bad.any():
        r = int(bad.arg_max())
        raise SidrecError(f"{_where(path, r)}: '{col}' value {df['timestamp'][r]!r} is not a Unix time (s, ms, us "
                          f"or ns) or a date/datetime")
    return df.with_columns(timestamp=secs), unit


def import_interactions(
    interactions: str | Path,
    items: str | Path,
    out: str | Path,
    user_col: str = "user",
    item_col: str = "item",
    time_col: str = "timestamp",
    item_id_col: str = "item_id",
    title_col: str = "title",
    description_col: str | None = None,
    brand_col: str | None = None,
    categories_col: str | None = None,
    start: str | None = None,
    end: str | None = None,
    user_k: int = 5,
    item_k: int = 5,
    max_history: int = 10,
    name: str | None = None,
) -> Dataset:
    """Build the canonical dataset folder `out` from your own interaction log and item table.

    Args:
        interactions: CSV/TSV or Parquet with one row per interaction (repeats are kept).
        items: CSV/TSV or Parquet with one row per item.
        out: the output folder (written atomically; `manifest.json` last).
        user_col, item_col, time_col: the interaction columns. Time is an integer Unix time in seconds, or a
            date/datetime (naive ones are read as UTC).
        item_id_col, title_col: the item table's id (matching `item_col`) and title columns.
        description_col, brand_col, categories_col: optional item columns; by default `description`, `brand` and
            `categories` are used when present. Categories are a list column, or in CSV text split on '|'.
        start, end: optional time window as `YYYY-MM` (first second of the month, UTC; both ends inclusive).
        user_k, item_k: iterative k-core thresholds; max_history: the most history items per sample.
        name: the dataset name (default: the interactions file's stem).

    Item ids become dense 0..N-1; the original id is kept in the items' `asin` column and users' `user_raw`.
    Returns the Dataset; `meta["skipped"]` and `meta["funnel"]` count what each filter removed.
    """
    t0 = time.time()
    interactions, items, out = Path(interactions), Path(items), Path(out)
    config = {"interactions": str(interactions), "items": str(items), "user_col": user_col, "item_col": item_col,
              "time_col": time_col, "item_id_col": item_id_col, "title_col": title_col, "start": start, "end": end,
              "user_k": user_k, "item_k": item_k, "max_history": max_history}
    meta = {"source": "interactions", "interactions": str(interactions), "items": str(items)}
    check_memory(interactions)
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    spill = out / ".items-cleaned.tmp"  # the cleaned item table, one Parquet file per chunk; removed below
    ok = False
    try:
        skipped = {"items_without_title": _clean_items(items, spill, item_id_col, title_col, description_col,
                                                       brand_col, categories_col)}
        # the log is a temporary argument: build_dataset frees its id strings once it has coded them
        ds = build_dataset(_read_log(interactions, user_col, item_col, time_col, meta),
                           pl.scan_parquet(spill / "*.parquet"), source=str(interactions), items_source=str(items),
                           name=name or interactions.stem, start=start, end=end, user_k=user_k, item_k=item_k,
                           max_history=max_history, skipped=skipped, meta=meta)
        ok = True
    finally:
        shutil.rmtree(spill, ignore_errors=True)
        if made and not ok:  # a failed import leaves no folder it made
            shutil.rmtree(out, ignore_errors=True)
    ds.save(out, stage="data", config=config, inputs={"interactions": interactions, "items": items},
            seconds=time.time() - t0)
    return ds


def check_memory(path: Path) -> None:
    """A SidrecError before any work when the log's interactions (counted from Parquet metadata, or estimated from a
    CSV's size and its first MiB) would need more memory than is available."""
    check_file(path)
    try:
        if _is_parquet(path):
            rows, how = pq.ParquetFile(path).metadata.num_rows, ""
        else:
            with open(path, "rb") as f:
                head = f.read(2**20)
            rows, how = int(path.stat().st_size * max(head.count(b"\n") - 1, 0) / max(len(head), 1)), "~"
    except (OSError, pa.ArrowException):
        return  # unreadable: the read reports it, naming the file
    need, free = 2**29 + BYTES_PER_INTERACTION * rows, available_memory()
    if free is not None and need > free:
        raise SidrecError(f"{path}: {how}{rows:,} interactions need about {need / 2**30:.1f} GiB in the data stage, "
                          f"but {free / 2**30:.1f} GiB is available; first cut the log, out of core, to the slice you "
                          f"train on (category, time window, active users: docs/benchmarks.md, \"Where one machine "
                          f"stops\"), or use a machine with more memory")


def _read_log(path: Path, user_col: str, item_col: str, time_col: str, meta: dict) -> pl.DataFrame:
    """The log's (user, item, timestamp in Unix seconds, row); the unit the times came in goes to meta["time_unit"]."""
    inter = _read(path, {"user_col": user_col, "item_col": item_col, "time_col": time_col}, {},
                  ids=["user_col", "item_col"], nonempty=["user_col", "item_col", "time_col"], text=("time_col",))
    inter = inter.rename({"user_col": "user", "item_col": "item", "time_col": "timestamp"})
    inter, meta["time_unit"] = _epoch_seconds(inter, path, time_col)
    return inter.select("user", "item", "timestamp", "row")


def _clean_items(items: Path, spill: Path, item_id_col: str, title_col: str, description_col: str | None,
                 brand_col: str | None, categories_col: str | None, chunk: int = 100_000) -> int:
    """Check the item table's ids (each non-empty and listed once), then clean it `chunk` rows at a time into Parquet
    files under `spill`: (item, title, description, brand, categories) for the rows with a non-empty cleaned title.
    Only one chunk's text is in memory at once. Returns how many rows had no title."""
    ids = _read(items, {"item_id_col": item_id_col}, {}, ids=["item_id_col"], nonempty=["item_id_col"])
    dup = ids["item_id_col"].is_duplicated()
    if dup.any():
        rows = dup.arg_true()
        first = ids["item_id_col"][int(rows[0])]
        again = [int(r) for r in rows if ids["item_id_col"][int(r)] == first]
        raise SidrecError(f"{_where(items, again[1])}: item id {first!r} is listed again (first at "
                          f"{_where(items, again[0])}); each item needs one row")
    total = ids.height
    del ids
    names = _scan(items, [item_id_col]).collect_schema().names()
    optional = {
        "description_col": description_col or ("description" if "description" in names else None),
        "brand_col": brand_col or ("brand" if "brand" in names else None),
        "categories_col": categories_col or ("categories" if "categories" in names else None),
    }
    lf = _select(items, {"item_id_col": item_id_col, "title_col": title_col}, optional, ids=["item_id_col"])
    shutil.rmtree(spill, ignore_errors=True)
    spill.mkdir(parents=True)
    kept = 0
    try:
        for k, batch in enumerate(lf.collect_batches(chunk_size=chunk)):
            part = _items_chunk(batch)
            part.write_parquet(spill / f"part-{k:06d}.parquet")
            kept += part.height
    except pl.exceptions.PolarsError as e:
        raise SidrecError(f"{items}: cannot read ({str(e).splitlines()[0]})") from None
    if kept == 0:  # an empty part keeps the scan's schema
        _items_chunk(lf.head(0).collect()).write_parquet(spill / "part-000000.parquet")
    return total - kept


def _items_chunk(table: pl.DataFrame) -> pl.DataFrame:
    def text(col):
        return [clean_text(v) for v in table[col].to_list()] if col in table.columns else [""] * table.height

    if "categories_col" in table.columns:
        cats = []
        for v in table["categories_col"].to_list():
            if isinstance(v, str):
                v = v.split(CATEGORY_SEP)
            cats.append([c for c in (clean_text(x) for x in (v or [])) if c])
    else:
        cats = [[] for _ in range(table.height)]
    df = pl.DataFrame(
        {"item": table["item_id_col"], "title": text("title_col"), "description": text("description_col"),
         "brand": text("brand_col"), "categories": cats},
        schema={"item": pl.String, "title": pl.String, "description": pl.String, "brand": pl.String,
                "categories": pl.List(pl.String)},
    )
    return df.filter(pl.col("title") != "")
