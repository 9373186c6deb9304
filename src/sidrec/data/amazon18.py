"""Amazon Reviews 2018 (raw review + metadata files) -> canonical dataset, with MiniOneRec's rules.

Reading is streamed: review lines are parsed in chunks keeping only reviewerID, asin and unixReviewTime, and only the
metadata of items that occur in the reviews is kept, so a 10M-review category fits in a few GiB.

Bad input policy:
- errors (SidrecError naming file:line): a truncated or corrupt .gz, a line that is neither JSON nor a Python dict
  literal, a review without reviewerID/asin/unixReviewTime or with a non-integer time;
- counted skips (in `meta["skipped"]`): blank lines, metadata lines without asin, items whose title fails MiniOneRec's
  rule (`meta_no_title`, `meta_title_span`, `meta_title_length`, counted per metadata line), and reviews of items with
  no usable metadata (`interactions_without_item`).
"""

from __future__ import annotations

import ast
import gzip
import io
import json
import os
import re
import time
import zlib
from collections import Counter
from pathlib import Path

import polars as pl

from sidrec.data.canonical import Dataset
from sidrec.data.download import download
from sidrec.data.preprocess import amazon_title, build_dataset, clean_text, to_seconds
from sidrec.errors import SidrecError
from sidrec.io import check_file

AMAZON18_URL = "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2"
REVIEW_FIELDS = {"reviewerID": "user", "asin": "item", "unixReviewTime": "timestamp"}
_REVIEW_SCHEMA = {"reviewerID": pl.String, "asin": pl.String, "unixReviewTime": pl.Int64}
CHUNK_LINES = 100_000


def default_cache_dir() -> Path:
    return Path(os.environ.get("SIDREC_CACHE", Path.home() / ".cache" / "sidrec")) / "amazon18"


def amazon18_urls(category: str, base_url: str = AMAZON18_URL) -> tuple[str, str]:
    """The public 5-core review file and metadata file of `category` (e.g. Industrial_and_Scientific)."""
    base = base_url.rstrip("/")
    return f"{base}/categoryFilesSmall/{category}_5.json.gz", f"{base}/metaFiles2/meta_{category}.json.gz"


# ---------------------------------------------------------------------------------------------------- lines
def iter_lines(path: Path):
    """Yield (line number, raw bytes) of a plain or gzip file (detected by its magic bytes, not its name)."""
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    n = 0
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            for n, line in enumerate(f, 1):
                yield n, line
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise SidrecError(f"{path}:{n + 1}: the gzip file is truncated or corrupt after line {n} ({e}); delete it and "
                          f"download it again") from None


def parse_line(path: Path, n: int, line: bytes) -> dict | None:
    """One JSON object, or a Python dict literal (some Amazon metadata files); None for a blank line."""
    text = line.strip()
    if not text:
        return None
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SidrecError(f"{path}:{n}: not UTF-8 text (byte 0x{text[e.start:e.start + 1].hex()} at column "
                          f"{e.start + 1}); re-download the file or convert it to UTF-8") from None
    try:
        obj = json.loads(decoded)
    except ValueError:
        try:
            obj = ast.literal_eval(decoded) if decoded.startswith("{") else None
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            obj = None
    if not isinstance(obj, dict):
        snippet = text[:60].decode("utf-8", "replace")
        raise SidrecError(f"{path}:{n}: not a JSON object: {snippet!r}; fix or remove the line (or re-download a "
                          f"corrupt file)")
    return obj


# ---------------------------------------------------------------------------------------------------- reviews
def read_reviews(path: str | Path) -> tuple[pl.DataFrame, dict]:
    """(user, item, timestamp, row) of every review, in file order, and the skip counts."""
    path = Path(path)
    frames, chunk, first, skipped = [], [], 1, Counter()
    for n, line in iter_lines(path):
        if not chunk:
            first = n
        chunk.append(line if line.endswith(b"\n") else line + b"\n")
        if len(chunk) == CHUNK_LINES:
            frames.append(_parse_reviews(path, chunk, first, skipped))
            chunk = []
    if chunk:
        frames.append(_parse_reviews(path, chunk, first, skipped))
    empty = pl.DataFrame(schema={"user": pl.String, "item": pl.String, "timestamp": pl.Int64})
    inter = pl.concat(frames) if frames else empty
    return inter.with_row_index("row"), dict(skipped)


def _parse_reviews(path: Path, lines: list[bytes], first: int, skipped: Counter) -> pl.DataFrame:
    # Fast path: polars parses a clean chunk ~5x faster than json.loads. Anything unusual (blank lines, missing or
    # odd fields, bad JSON) goes through the line-by-line path, which names the offending line.
    try:
        df = pl.read_ndjson(io.BytesIO(b"".join(lines)), schema=_REVIEW_SCHEMA)
        if df.height == len(lines) and df.null_count().sum_horizontal().item() == 0 and \
                not (df["reviewerID"].str.len_bytes() == 0).any() and not (df["asin"].str.len_bytes() == 0).any():
            return df.rename(REVIEW_FIELDS)
    except Exception:  # noqa: BLE001 - any polars failure just means "take the careful path"
        pass
    users, items, times = [], [], []
    for n, line in enumerate(lines, first):
        review = parse_line(path, n, line)
        if review is None:
            skipped["blank_lines"] += 1
            continue
        for key in REVIEW_FIELDS:
            if review.get(key) in (None, ""):
                raise SidrecError(f"{path}:{n}: review has no {key}; every review needs reviewerID, asin and "
                                  f"unixReviewTime (fix or remove the line)")
        try:
            t = int(review["unixReviewTime"])
        except (TypeError, ValueError):
            raise SidrecError(f"{path}:{n}: unixReviewTime {review['unixReviewTime']!r} is not an integer Unix "
                              f"time") from None
        users.append(str(review["reviewerID"]))
        items.append(str(review["asin"]))
        times.append(t)
    return pl.DataFrame({"user": users, "item": items, "timestamp": times},
                        schema={"user": pl.String, "item": pl.String, "timestamp": pl.Int64})


# ---------------------------------------------------------------------------------------------------- metadata
def read_meta(path: str | Path, wanted: set[str] | None = None) -> tuple[pl.DataFrame, dict]:
    """Items (item, title, description, brand, categories) with a usable title, restricted to `wanted` asins.

    An asin on several lines keeps its last line with a usable title (MiniOneRec's `id_title` dict does the same).
    """
    path = Path(path)
    rows, frames, skipped = {}, [], Counter()
    for n, line in iter_lines(path):
        if len(rows) == CHUNK_LINES:  # into a compact frame every chunk: Python strings cost ~3x their text
            frames.append(_meta_frame(rows))
            rows = {}
        m = parse_line(path, n, line)
        if m is None:
            skipped["blank_lines"] += 1
            continue
        asin = m.get("asin")
        if not asin:
            skipped["meta_no_asin"] += 1
            continue
        title, reason = amazon_title(m.get("title"))
        if reason:
            skipped[f"meta_{reason}"] += 1
            continue
        if wanted is not None and asin not in wanted:
            continue
        brand = m.get("brand")
        brand = clean_text(brand.replace("by\n", "")) if isinstance(brand, str) else ""
        cats = m.get("category") or []  # MiniOneRec read "categories", which 2018 files lack: always empty there
        cats = [c for c in (clean_text(c) for c in (cats if isinstance(cats, list) else [cats])) if c]
        rows[str(asin)] = (title, clean_text(m.get("description")), brand, cats)
    frames.append(_meta_frame(rows))
    items = pl.concat(frames).unique("item", keep="last", maintain_order=True) if len(frames) > 1 else frames[0]
    return items, dict(skipped)


def _meta_frame(rows: dict) -> pl.DataFrame:
    return pl.DataFrame(
        {"item": list(rows), "title": [r[0] for r in rows.values()], "description": [r[1] for r in rows.values()],
         "brand": [r[2] for r in rows.values()], "categories": [r[3] for r in rows.values()]},
        schema={"item": pl.String, "title": pl.String, "description": pl.String, "brand": pl.String,
                "categories": pl.List(pl.String)},
    )


# ---------------------------------------------------------------------------------------------------- entry point
def preprocess_amazon18(
    category: str,
    out: str | Path,
    reviews: str | Path | None = None,
    meta: str | Path | None = None,
    start: str | None = "2016-10",
    end: str | None = "2018-11",
    user_k: int = 5,
    item_k: int = 5,
    max_history: int = 10,
    cache_dir: str | Path | None = None,
    base_url: str = AMAZON18_URL,
    progress: bool = True,
) -> Dataset:
    """Build the canonical dataset folder `out` from Amazon Reviews 2018 files, the MiniOneRec way.

    Args:
        category: the Amazon category file name, e.g. `Industrial_and_Scientific`; used to download missing files
            and as the dataset name.
        out: the output folder (written atomically; `manifest.json` last).
        reviews: local review file (`.json` or `.json.gz`, one object per line); default: download
            `{base_url}/categoryFilesSmall/{category}_5.json.gz` into `cache_dir`.
        meta: local metadata file; default: download `{base_url}/metaFiles2/meta_{category}.json.gz`.
        start, end: time window as `YYYY-MM`, kept as `start <= unixReviewTime <= end` with both the first second of
            the month (UTC), MiniOneRec's comparison; `None` or "" for no bound.
        user_k, item_k: iterative k-core thresholds for users and for items (both honoured).
        max_history: the most history items per sample.
        cache_dir: where downloads go (default `$SIDREC_CACHE/amazon18` or `~/.cache/sidrec/amazon18`).
        base_url: the Amazon-2018 mirror to download from.
        progress: show download progress bars.

    Returns the Dataset; `meta["skipped"]` and `meta["funnel"]` count what each filter removed. See
    `sidrec.data.preprocess` for the rules and the split arithmetic.
    """
    t0 = time.time()
    if reviews is None or meta is None:
        if not re.fullmatch(r"[A-Za-z0-9_]+", category):
            raise SidrecError(f"category {category!r}: expected an Amazon-2018 name like Industrial_and_Scientific")
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        review_url, meta_url = amazon18_urls(category, base_url)
        if reviews is None:
            reviews = download(review_url, cache / review_url.rsplit("/", 1)[1], progress=progress)
        if meta is None:
            meta = download(meta_url, cache / meta_url.rsplit("/", 1)[1], progress=progress)
    reviews, meta = Path(reviews), Path(meta)
    for p in (reviews, meta):
        check_file(p)

    inter, skipped = read_reviews(reviews)
    secs, time_unit = to_seconds(inter["timestamp"], lambda r: f"{reviews}: review {r + 1}")
    inter = inter.with_columns(timestamp=secs)
    items, meta_skipped = read_meta(meta, wanted=set(inter["item"].unique().to_list()))
    for k, v in meta_skipped.items():
        skipped[k] = skipped.get(k, 0) + v
    config = {"category": category, "start": start, "end": end, "user_k": user_k, "item_k": item_k,
              "max_history": max_history}
    ds = build_dataset(inter, items, source=str(reviews), items_source=str(meta), name=category, start=start, end=end,
                       user_k=user_k, item_k=item_k, max_history=max_history, skipped=skipped,
                       meta={"source": "amazon18", "reviews": str(reviews), "metadata": str(meta),
                             "time_unit": time_unit})
    ds.save(out, stage="data", config=config, inputs={"reviews": reviews, "meta": meta}, seconds=time.time() - t0)
    return ds
