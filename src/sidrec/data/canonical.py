"""The canonical dataset folder: the one format every downstream stage reads.

Layout (documented in docs/data_format.md)::

    DIR/items.parquet     item_id:int64 (0..N-1, dense), title, description, brand:str, categories:list<str>, asin:str|null
    DIR/users.parquet     user:int64 (dense), user_raw:str|null (the id in the source data)
    DIR/train.parquet     user:int64, history:list<int64> (oldest first, <= max_history), target:int64, timestamp:int64|null
    DIR/valid.parquet     same columns; rows in chronological order of the target
    DIR/test.parquet      same columns
    DIR/meta.json         name, source, max_history, window, k-core, counts, ...
    DIR/manifest.json     what produced the folder (written last)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sidrec.errors import SidrecError
from sidrec.io import atomic_path, check_folder, read_json, read_manifest, read_parquet, write_json, write_manifest

HISTORY_TYPE = pa.list_(pa.int64())

SPLITS = ("train", "valid", "test")
FORMAT_VERSION = 1

ITEM_SCHEMA = pa.schema(
    [
        ("item_id", pa.int64()),
        ("title", pa.string()),
        ("description", pa.string()),
        ("brand", pa.string()),
        ("categories", pa.list_(pa.string())),
        ("asin", pa.string()),
    ]
)
USER_SCHEMA = pa.schema([("user", pa.int64()), ("user_raw", pa.string())])
SPLIT_SCHEMA = pa.schema(
    [
        ("user", pa.int64()),
        ("history", pa.list_(pa.int64())),
        ("target", pa.int64()),
        ("timestamp", pa.int64()),
    ]
)


def history_array(values) -> pd.api.extensions.ExtensionArray:
    """A split's `history` column as one Arrow list array (flat item ids plus offsets), whatever it came as: Python
    lists, an Arrow array or an Arrow-backed column. A row still reads as a Python list (`df["history"].iloc[r]`,
    iteration, `tolist()`), made when asked for; the column itself costs 8 bytes an item and 4 a row, where a list
    object per row costs ~100 bytes more (and an int object per item 32 more, unless shared)."""
    if isinstance(values, pd.Series):
        values = values.array
    if isinstance(getattr(values, "dtype", None), pd.ArrowDtype):
        arr = values.__arrow_array__()  # the column's own chunks, no copy
    elif isinstance(values, (pa.Array, pa.ChunkedArray)):
        arr = values
    else:
        arr = pa.array([list(h) if h is not None else None for h in values], type=HISTORY_TYPE)
    if arr.type != HISTORY_TYPE:
        arr = arr.cast(HISTORY_TYPE)
    return pd.arrays.ArrowExtensionArray(arr)


def history_chunks(values):
    """A history column's Arrow chunks as (lengths int64, flat item ids) numpy pairs: what code that reads every row
    works on, in place of a list per row. Row r of a chunk is flat[ends[r] - lengths[r]:ends[r]], ends the cumsum."""
    for chunk in history_array(values).__arrow_array__().chunks:
        lengths = pc.list_value_length(chunk).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        yield lengths, pc.list_flatten(chunk).to_numpy(zero_copy_only=False)


def history_lengths(values) -> np.ndarray:
    """Each row's history length (int64), read from the Arrow offsets without making the rows' lists."""
    parts = [lengths for lengths, _ in history_chunks(values)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _write_parquet(df: pd.DataFrame, schema: pa.Schema, path: Path) -> None:
    # without pandas' metadata: the column types are the schema's, whatever pandas dtype held them
    table = pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False).replace_schema_metadata(None)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def latest_rows_per_user(split: pd.DataFrame, n: int) -> np.ndarray:
    """Sorted positions of each user's latest `n` rows in a split (a user's rows are in time order)."""
    return np.sort(split.reset_index(drop=True).groupby("user", sort=False).tail(n).index.to_numpy())


def histories_after(split: pd.DataFrame, max_history: int) -> pd.DataFrame:
    """Each user's history at the end of a split: their latest row's history plus its target, the last
    `max_history` items. These are the prompts for the user's *next*, still unseen, item (no target), in the order
    of the users' latest rows."""
    latest = split.reset_index(drop=True).iloc[latest_rows_per_user(split, 1)]
    histories = [(list(h) + [int(t)])[-max_history:] for h, t in zip(latest["history"], latest["target"])]
    return pd.DataFrame({"user": latest["user"].to_numpy(), "history": histories})


@dataclass
class Dataset:
    """Items, users and the three chronological splits, plus free-form metadata."""

    items: pd.DataFrame
    splits: dict[str, pd.DataFrame]
    users: pd.DataFrame | None = None
    meta: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_frames(cls, items, splits, users=None, meta=None) -> "Dataset":
        items = items.copy()
        for col, default in (("description", ""), ("brand", ""), ("asin", None)):
            if col not in items:
                items[col] = default
        if "categories" not in items:
            items["categories"] = [[] for _ in range(len(items))]
        items = items.sort_values("item_id", kind="stable").reset_index(drop=True)
        fixed = {}
        for name in SPLITS:
            df = splits[name].copy()
            try:
                df["history"] = history_array(df["history"])
            except (pa.ArrowException, TypeError, ValueError) as e:
                raise SidrecError(f"split '{name}': 'history' must hold lists of integer item ids "
                                  f"({str(e).splitlines()[0]})") from None
            if "timestamp" not in df:
                df["timestamp"] = None
            fixed[name] = df.reset_index(drop=True)
        if users is None:
            all_users = sorted(set().union(*(set(df["user"].tolist()) for df in fixed.values())))
            users = pd.DataFrame({"user": all_users, "user_raw": [None] * len(all_users)})
        ds = cls(items=items, splits=fixed, users=users, meta=dict(meta or {}))
        ds.validate()
        ds.meta.update(ds.counts())
        ds.meta["format_version"] = FORMAT_VERSION
        return ds

    # ------------------------------------------------------------------ properties
    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def max_history(self) -> int:
        return int(self.meta.get("max_history", 10))

    def titles(self) -> list[str]:
        return self.items["title"].tolist()

    def counts(self) -> dict:
        c = {"num_items": self.num_items, "num_users": len(self.users) if self.users is not None else None}
        for name in SPLITS:
            c[f"num_{name}"] = len(self.splits[name])
        return c

    def train_target_counts(self) -> np.ndarray:
        """How often each item is a train target (the popularity used by baselines and analysis)."""
        return np.bincount(self.splits["train"]["target"].to_numpy(), minlength=self.num_items)

    def fingerprint(self) -> str:
        """A short hash of the catalogue size and every split's users and targets: two folders with the same
        fingerprint hold the same rows, so a model trained on one (e.g. a SASRec scorer) fits the other."""
        import hashlib

        h = hashlib.sha256(str(self.num_items).encode())
        for name in SPLITS:
            for col in ("user", "target"):
                h.update(np.asarray(self.splits[name][col], dtype="<i8").tobytes())
        return h.hexdigest()[:16]

    def user_sequences(self) -> dict[int, list[int]]:
        """Each user's full time-ordered item sequence, rebuilt from the splits.

        Every interaction after a user's first is a target exactly once, so the sequence is the first sample's
        first history item followed by all targets in chronological (split, row) order.
        """
        seqs: dict[int, list[int]] = {}
        for name in SPLITS:
            df = self.splits[name]
            for user, hist, target in zip(df["user"].tolist(), df["history"].tolist(), df["target"].tolist()):
                seq = seqs.get(user)
                if seq is None:
                    seq = seqs[user] = [int(hist[0])] if len(hist) else []
                seq.append(int(target))
        return seqs

    # ------------------------------------------------------------------ checks
    def validate(self, source: str = "dataset") -> None:
        ids = self.items["item_id"].to_numpy()
        if len(ids) == 0:
            raise SidrecError(f"{source}: the item catalogue is empty")
        if not np.array_equal(np.sort(ids), np.arange(len(ids))):
            raise SidrecError(f"{source}: item_id must be dense 0..{len(ids) - 1}; got {len(ids)} ids from "
                              f"{ids.min()} to {ids.max()} (duplicates or gaps)")
        n = len(ids)
        for name in SPLITS:
            df = self.splits.get(name)
            if df is None or len(df) == 0:
                raise SidrecError(f"{source}: split '{name}' is empty; every split needs at least one row")
            bad_t = np.flatnonzero((df["target"].to_numpy() < 0) | (df["target"].to_numpy() >= n))
            if len(bad_t):
                r = int(bad_t[0])
                raise SidrecError(f"{source}: split '{name}' row {r}: target item {df['target'].iloc[r]} is not in "
                                  f"the catalogue of {n} items ({len(bad_t)} such rows)")
            first = 0  # checked on each Arrow chunk's flat arrays, not row by row
            for lengths, flat in history_chunks(df["history"]):
                if (lengths == 0).any():
                    r = first + int(np.argmax(lengths == 0))
                    raise SidrecError(f"{source}: split '{name}' row {r}: empty history; every sample needs at least "
                                      f"one history item")
                bad = np.flatnonzero((flat < 0) | (flat >= n))
                if len(bad):
                    r = first + int(np.searchsorted(np.cumsum(lengths), bad[0], side="right"))
                    raise SidrecError(f"{source}: split '{name}' row {r}: history item {flat[bad[0]]} is not in the "
                                      f"catalogue of {n} items")
                first += len(lengths)

    # ------------------------------------------------------------------ disk
    def save(self, folder: str | Path, stage: str = "data", config=None, inputs=None, seconds=None) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "manifest.json").unlink(missing_ok=True)  # an incomplete folder must not look finished
        _write_parquet(self.items, ITEM_SCHEMA, folder / "items.parquet")
        _write_parquet(self.users, USER_SCHEMA, folder / "users.parquet")
        for name in SPLITS:
            _write_parquet(self.splits[name], SPLIT_SCHEMA, folder / f"{name}.parquet")
        write_json(folder / "meta.json", self.meta)
        write_manifest(folder, stage, config=config, inputs=inputs, seconds=seconds, extra={"counts": self.counts()})
        return folder

    @classmethod
    def load(cls, folder: str | Path, validate: bool = True) -> "Dataset":
        folder = Path(folder)
        tables = {name: _table(folder, name, schema) for name, schema in (
            ("items", ITEM_SCHEMA), ("users", USER_SCHEMA), *((s, SPLIT_SCHEMA) for s in SPLITS))}
        items, users = tables["items"], tables["users"]
        items["categories"] = [list(c) if c is not None else [] for c in items["categories"]]
        splits = {name: tables[name] for name in SPLITS}
        redo = "re-run the data stage that wrote the folder"
        meta = read_json(folder / "meta.json", hint=redo)
        if not isinstance(meta, dict):
            raise SidrecError(f"{folder / 'meta.json'}: expected a JSON object, got {type(meta).__name__}; {redo}")
        ds = cls(items=items, splits=splits, users=users, meta=meta)
        if validate:
            ds.validate(source=str(folder))
        return ds

    @staticmethod
    def load_items(folder: str | Path) -> pd.DataFrame:
        """The item table of a dataset folder alone (what embedding needs), without its splits' histories."""
        items = _table(Path(folder), "items", ITEM_SCHEMA)
        items["categories"] = [list(c) if c is not None else [] for c in items["categories"]]
        return items


def _table(folder: Path, name: str, schema) -> pd.DataFrame:
    """One table of a finished dataset folder, with the columns `schema` names, or a one-line SidrecError."""
    check_folder(folder, "dataset folder", "make one with `sidrec data import-minionerec` or `sidrec data amazon18`")
    if not (folder / "items.parquet").exists():
        raise SidrecError(f"{folder}: not a sidrec dataset folder (no items.parquet). If it is a MiniOneRec folder, "
                          f"run `sidrec data import-minionerec {folder} --out DIR` first")
    if read_manifest(folder) is None:
        raise SidrecError(f"{folder}: no manifest.json, so the folder was not finished; re-run the data stage")
    redo = "re-run the data stage that wrote the folder"
    path = folder / f"{name}.parquet"
    table = read_parquet(path, hint=redo)
    missing = [c for c in schema.names if c not in table.column_names]
    if missing:
        raise SidrecError(f"{path}: missing column(s) {missing}; {redo}")
    if "history" not in schema.names:
        return table.to_pandas(ignore_metadata=True)
    df = table.drop_columns(["history"]).to_pandas(ignore_metadata=True)
    df.insert(min(1, len(df.columns)), "history", history_array(table["history"]))  # stays Arrow: no list per row
    return df
