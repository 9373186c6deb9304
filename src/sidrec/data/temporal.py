"""Cut a dataset's training period at a point in time: the data a model was trained on, and the later slice that
`sidrec update` continues it on.

`split_time(ds, at=T)` keeps the training rows whose target is before T (unix seconds) as the old dataset and the
rows from T on as the update slice; `fraction=f` cuts after the first f of the training rows instead (rows are in
chronological order; with timestamps the cut moves back to the first row of its second, so no second is split).

Items are renumbered so that both datasets share ids: the items of the old rows (histories and targets) come first,
0..n_old-1 in their old order, and the rest (first seen after the cut, or never in the training rows) follow, so
`sidrec sid assign --data NEW` gives exactly the new items SIDs. The slice's valid and test splits are the source's;
the old dataset's are the source's rows on old items only (a model that knows no new item is selected and tested on
the same later period). Users keep their ids.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from sidrec.data.canonical import Dataset
from sidrec.errors import SidrecError


def _renumber(df: pd.DataFrame, new_id: np.ndarray) -> pd.DataFrame:
    df = df.copy()
    df["history"] = [new_id[np.asarray(h, dtype=np.int64)].tolist() for h in df["history"]]
    df["target"] = new_id[df["target"].to_numpy()]
    return df.reset_index(drop=True)


def _cut(train: pd.DataFrame, at: int | None, fraction: float | None, source: str) -> tuple[np.ndarray, int | None]:
    """Mask of the training rows before the cut, and the cut's time (None without timestamps)."""
    ts = train["timestamp"]
    timed = bool(len(ts)) and bool(ts.notna().all())
    if (at is None) == (fraction is None):
        raise SidrecError("give the split point either as a time (--at) or as a share of the training rows "
                          "(--fraction), not both or neither")
    if fraction is not None:
        if not 0 < fraction < 1:
            raise SidrecError(f"--fraction must be between 0 and 1 (a share of the training rows), got {fraction}")
        k = int(len(train) * fraction)
        if not timed:
            return np.arange(len(train)) < k, None
        at = int(ts.iloc[min(k, len(train) - 1)])
    elif not timed:
        raise SidrecError(f"{source}: train.parquet has no timestamps, so it cannot be cut at a time; cut it with "
                          f"--fraction (its rows are in chronological order)")
    ts = ts.to_numpy(dtype=np.int64)
    old = ts < at
    if old.all() or not old.any():
        raise SidrecError(f"{source}: cutting at {at} leaves {'no' if not old.any() else 'every'} training row before "
                          f"it; the training targets run from {ts.min()} to {ts.max()} (unix seconds)")
    return old, int(at)


def split_time(ds: Dataset, at: int | None = None, fraction: float | None = None,
               source: str = "dataset") -> tuple[Dataset, Dataset, dict]:
    """(old dataset, update slice, summary) of `ds` cut at time `at` or after a `fraction` of its training rows."""
    train = ds.splits["train"]
    old, at = _cut(train, at, fraction, source)
    old_rows, new_rows = train[old], train[~old]
    seen = np.zeros(ds.num_items, dtype=bool)
    for h in old_rows["history"]:
        seen[np.asarray(h, dtype=np.int64)] = True
    seen[old_rows["target"].to_numpy()] = True
    order = np.concatenate([np.flatnonzero(seen), np.flatnonzero(~seen)])  # old items first, then the new ones
    new_id = np.empty(ds.num_items, dtype=np.int64)
    new_id[order] = np.arange(ds.num_items)
    n_old = int(seen.sum())
    items = ds.items.iloc[order].reset_index(drop=True).assign(item_id=np.arange(ds.num_items))

    later = {s: _renumber(ds.splits[s], new_id) for s in ("valid", "test")}
    on_old = {s: df[[max(h) < n_old and t < n_old for h, t in zip(df["history"], df["target"])]]
              for s, df in later.items()}
    for s, df in on_old.items():
        if df.empty:
            raise SidrecError(f"{source}: no {s} row uses only items seen before the cut, so the old dataset would "
                              f"have an empty {s} split; cut later")
    in_slice = {int(i) for h, t in zip(new_rows["history"], new_rows["target"]) for i in [*h, t]}
    summary = {"source": source, "at": at, "fraction": fraction, "old_rows": len(old_rows), "new_rows": len(new_rows),
               "old_items": n_old, "new_items": ds.num_items - n_old,
               "new_items_in_slice": int(sum(not seen[i] for i in in_slice))}
    meta = {**ds.meta, "split_time": summary}
    old_ds = Dataset.from_frames(items.iloc[:n_old], {"train": _renumber(old_rows, new_id), **on_old},
                                 users=ds.users, meta={**meta, "split_time": {**summary, "part": "old"}})
    new_ds = Dataset.from_frames(items, {"train": _renumber(new_rows, new_id), **later},
                                 users=ds.users, meta={**meta, "split_time": {**summary, "part": "new"}})
    return old_ds, new_ds, summary


def parse_time(text: str) -> int:
    """Unix seconds from an integer or an ISO date/time (UTC unless it names a zone)."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        stamp = pd.Timestamp(text)
    except ValueError:
        raise SidrecError(f"--at {text!r}: expected unix seconds or a date such as 2018-06-01") from None
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return int(stamp.timestamp())


def split_time_folders(data_dir, out_old, out_new, at: str | int | None = None,
                       fraction: float | None = None) -> dict:
    """`split_time` on a dataset folder; writes the two datasets (each with its manifest). Returns the summary."""
    t0 = time.time()
    data_dir, out_old, out_new = Path(data_dir), Path(out_old), Path(out_new)
    if len({p.resolve() for p in (data_dir, out_old, out_new)}) < 3:
        raise SidrecError(f"{data_dir}, --out-old and --out-new must be three different folders")
    at = parse_time(at) if isinstance(at, str) else at
    old_ds, new_ds, summary = split_time(Dataset.load(data_dir), at, fraction, source=str(data_dir))
    config = {"at": at, "fraction": fraction}
    for ds, out in ((old_ds, out_old), (new_ds, out_new)):
        ds.save(out, stage="data", config={"split_time": config}, inputs={"source": data_dir / "manifest.json"},
                seconds=time.time() - t0)
    return summary
