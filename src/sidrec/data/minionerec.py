"""MiniOneRec folder interop, both ways.

MiniOneRec's layout (AkaliKong/MiniOneRec `data/Amazon/`)::

    SRC/train|valid|test/{stem}.csv   user_id,history_item_title,item_title,history_item_id,item_id,history_item_sid,item_sid
    SRC/index/{cat}.index.json        {"item_id": ["<a_x>", "<b_y>", "<c_z>"]}
    SRC/index/{cat}.item.json         {"item_id": {"title", "description", "brand", "categories"}}
    SRC/info/{stem}.txt               SID<TAB>title<TAB>item_id, one line per item
    SRC/inter/{cat}.{split}.inter     optional: user<TAB>space-separated history<TAB>target
    SRC/inter/{cat}.inter.json        optional: {user: [item, ...]} full sequences

The CSV columns other than the ids are derived (titles and SIDs of the ids), so the canonical dataset keeps only the
ids; export re-derives them with the same formatting MiniOneRec used (pandas `to_csv`, Python `str(list)`), which
reproduces the original files byte for byte. Description strings are kept exactly as given (MiniOneRec stores them as
stringified lists); the embedding stage cleans text, not the importer.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pandas as pd

from sidrec.data.canonical import SPLITS, Dataset
from sidrec.errors import SidrecError
from sidrec.data.sid_index import load_sids
from sidrec.io import atomic_path, check_folder, read_json, reading, write_manifest, write_text

CSV_COLUMNS = ["user_id", "history_item_title", "item_title", "history_item_id", "item_id", "history_item_sid",
               "item_sid"]
INTER_HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"


# ---------------------------------------------------------------------------------------------------- finding files
def _one(folder: Path, pattern: str, what: str, required: bool = True) -> Path | None:
    found = sorted(folder.glob(pattern))
    if not found:
        if required:
            raise SidrecError(f"{folder}: no {what} ({pattern}); a MiniOneRec folder has train/, valid/, test/ CSVs "
                              f"and index/*.item.json")
        return None
    if len(found) > 1:
        raise SidrecError(f"{folder}: several {what} files match {pattern}: {[p.name for p in found]}; keep one")
    return found[0]


def find_layout(src: Path) -> dict:
    check_folder(src, "MiniOneRec folder")
    layout = {s: _one(src / s, "*.csv", f"{s} split CSV") for s in SPLITS}
    layout["item_json"] = _one(src / "index", "*.item.json", "item catalogue")
    layout["index_json"] = _one(src / "index", "*.index.json", "SID index", required=False)
    layout["info"] = _one(src / "info", "*.txt", "info file", required=False)
    category = layout["item_json"].name[: -len(".item.json")]
    layout["category"] = category
    layout["stem"] = layout["test"].stem
    layout["inter"] = {s: src / "inter" / f"{category}.{s}.inter" for s in SPLITS}
    layout["inter_json"] = src / "inter" / f"{category}.inter.json"
    return layout


# ---------------------------------------------------------------------------------------------------- reading
_INT = re.compile(r"-?[0-9]+")  # ASCII digits only: str.isdigit() and int() also accept "١٢"
_USER = re.compile(r"A?([0-9]+)")
# A list of ints, checked by two linear scans without a backtracking stack (one regex with a repeated group needs
# ~100 bytes of memory per character: 5 GB for a 50 MB cell): only list characters, and none of the bad joints.
_LIST_CHARS = re.compile(r"\[[0-9,\s-]*\]")
_LIST_BAD = re.compile(r",\s*,|[0-9]\s+-?[0-9]|-(?![0-9])|[0-9]-|\[\s*,|,\s*\]")
_SID_STR = re.compile(r"(?:<[a-z]_[0-9]+>)+")
# Columns derived from the ids and not read: a malformed cell there is counted and reported, not an error.
UNREAD_CHECKS = {
    "history_item_title": lambda v: v.startswith("[") and v.endswith("]"),
    "history_item_sid": lambda v: v.startswith("[") and v.endswith("]"),
    "item_sid": lambda v: _SID_STR.fullmatch(v) is not None,
}


def parse_history(text: str, path: Path, line: int, max_history: int,
                  column: str = "history_item_id") -> tuple[list[int], bool]:
    """The last `max_history` ids of a list cell like "[3, 17, 5]", and whether it was longer.

    The whole cell is checked by one regex (no Python object per element), and only the kept tail is split, so a
    huge cell costs its length in bytes, not a Python int per element."""
    text = text.strip()
    if _LIST_CHARS.fullmatch(text) is None or _LIST_BAD.search(text) is not None:
        raise SidrecError(f"{path}:{line}: column '{column}' is not a Python list of integers like [3, 17, 5]: "
                          f"{text[:60]!r}")
    parts = text[1:-1].rsplit(",", max_history)
    cut = len(parts) > max_history
    ids = [int(x) for x in parts[-max_history:] if x.strip()]
    return ids, cut


def read_split_csv(path: Path, num_items: int, max_history: int = 10, report: dict | None = None) -> pd.DataFrame:
    """(user, history, target) of a MiniOneRec split CSV; histories keep their last `max_history` ids.

    `report` (if given) collects what is counted rather than rejected: `truncated_histories` and, per derived
    column that is not read, `malformed_<column>` as [count, first file:line]."""
    report = {} if report is None else report
    try:
        with reading(path):
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise SidrecError(f"{path}: not a readable CSV ({str(e).strip().splitlines()[0]})") from None
    missing = [c for c in ("user_id", "history_item_id", "item_id") if c not in df.columns]
    if missing:
        raise SidrecError(f"{path}: missing column(s) {missing}; expected MiniOneRec's header {','.join(CSV_COLUMNS)}")
    if df.empty:
        raise SidrecError(f"{path}: the split has no rows")
    users, histories, targets = [], [], []
    for i, (user, hist, target) in enumerate(zip(df["user_id"], df["history_item_id"], df["item_id"])):
        line = i + 2  # 1-based, after the header (a quoted cell with a newline shifts this; pandas hides it)
        m = _USER.fullmatch(user)
        if m is None:
            raise SidrecError(f"{path}:{line}: user_id {user[:40]!r} is not of MiniOneRec's form 'A<number>'")
        h, cut = parse_history(hist, path, line, max_history)
        report["truncated_histories"] = report.get("truncated_histories", 0) + cut
        if _INT.fullmatch(target.strip()) is None:
            raise SidrecError(f"{path}:{line}: item_id {target[:40]!r} is not an integer")
        t = int(target)
        for it in [*h, t]:
            if not 0 <= it < num_items:
                raise SidrecError(f"{path}:{line}: item id {it!r} is not in the catalogue of {num_items} items "
                                  f"(index/*.item.json)")
        if not h:
            raise SidrecError(f"{path}:{line}: empty history")
        users.append(int(m[1]))
        histories.append(h)
        targets.append(t)
    for column, ok in UNREAD_CHECKS.items():
        if column in df.columns:
            bad = [i for i, v in enumerate(df[column]) if not ok(v.strip())]
            if bad:
                n, first = report.get(f"malformed_{column}", [0, f"{path}:{bad[0] + 2}"])
                report[f"malformed_{column}"] = [n + len(bad), first]
    return pd.DataFrame({"user": users, "history": histories, "target": targets, "timestamp": None})


ITEM_TEXT_FIELDS = ("title", "description", "brand", "asin")


def read_item_json(path: Path) -> pd.DataFrame:
    raw = read_json(path, hint="MiniOneRec's index/*.item.json maps item ids to {title, description, brand, "
                               "categories}")
    if not isinstance(raw, dict) or not raw:
        raise SidrecError(f"{path}: expected a non-empty JSON object item_id -> {{title, ...}}, got "
                          f"{type(raw).__name__}")
    bad = next((k for k in raw if not re.fullmatch(r"0|[1-9][0-9]*", k)), None)
    if bad is not None:
        raise SidrecError(f"{path}: item id {bad[:40]!r} is not a plain integer (ASCII digits, no sign or spaces)")
    keys = {int(k): k for k in raw}
    ids = sorted(keys)
    if ids != list(range(len(ids))):
        raise SidrecError(f"{path}: item ids must be 0..{len(ids) - 1} without gaps")
    rows = []
    for i in ids:
        meta = raw[keys[i]]
        if not isinstance(meta, dict) or not meta.get("title"):
            raise SidrecError(f"{path}: item {i} has no title")
        for f in ITEM_TEXT_FIELDS:
            if meta.get(f) is not None and not isinstance(meta[f], str):
                raise SidrecError(f"{path}: item {i}: field '{f}' should be text, got {type(meta[f]).__name__} "
                                  f"{str(meta[f])[:40]!r}")
        cats = meta.get("categories") or []
        cats = [cats] if isinstance(cats, str) else cats
        if not isinstance(cats, list) or not all(isinstance(c, str) for c in cats):
            raise SidrecError(f"{path}: item {i}: field 'categories' should be text or a list of text, got "
                              f"{str(meta.get('categories'))[:40]!r}")
        rows.append({
            "item_id": i,
            "title": meta["title"],
            "description": meta.get("description") or "",
            "brand": meta.get("brand") or "",
            "categories": list(cats),
            "asin": meta.get("asin"),
        })
    return pd.DataFrame(rows)


def import_minionerec(src: str | Path, out: str | Path, max_history: int = 10) -> Dataset:
    """Read a MiniOneRec data folder into a canonical dataset at `out` (its SIDs, if any, into `out/sids/`)."""
    t0 = time.time()
    src, out = Path(src), Path(out)
    layout = find_layout(src)
    items = read_item_json(layout["item_json"])
    report: dict = {}
    splits = {s: read_split_csv(layout[s], len(items), max_history, report) for s in SPLITS}
    _check_inter_files(layout, splits, max_history)
    users = sorted(set().union(*(set(df["user"]) for df in splits.values())))
    users_df = pd.DataFrame({"user": users, "user_raw": [f"A{u}" for u in users]})
    meta = {
        "name": layout["category"],
        "category": layout["category"],
        "source": {"format": "minionerec", "path": str(src.resolve())},
        "minionerec_stem": layout["stem"],
        "max_history": max_history,
        "timestamps": False,
        "warnings": _warnings(report, max_history),
    }
    ds = Dataset.from_frames(items, splits, users=users_df, meta=meta)
    inputs = {s: layout[s] for s in SPLITS} | {"item_json": layout["item_json"]}
    if layout["index_json"] is not None:
        _, tokens = load_sids(layout["index_json"])
        _check_sid_count(layout["index_json"], len(tokens), ds.num_items, src)
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "sids" / "index.json", json.dumps({str(i): t for i, t in enumerate(tokens)}))
        write_manifest(out / "sids", "sid", config={"method": "imported", "source": str(layout["index_json"])},
                       inputs={"index_json": layout["index_json"]})
        inputs["index_json"] = layout["index_json"]
    ds.save(out, stage="data.import-minionerec", config={"src": str(src), "max_history": max_history},
            inputs=inputs, seconds=time.time() - t0)
    return ds


def _warnings(report: dict, max_history: int) -> list[str]:
    """One line per counted oddity of the CSVs (kept in meta.json and printed by the CLI)."""
    out = []
    if report.get("truncated_histories"):
        out.append(f"{report['truncated_histories']} histories longer than max_history={max_history} were cut to "
                   f"their last {max_history} items")
    for key, value in sorted(report.items()):
        if key.startswith("malformed_"):
            n, first = value
            out.append(f"{n} rows have a malformed '{key[len('malformed_'):]}' (first at {first}); the column is "
                       f"derived from the ids and not read, so they were imported from their ids")
    return out


def _check_inter_files(layout: dict, splits: dict[str, pd.DataFrame], max_history: int = 10) -> None:
    """Where `.inter` files exist, they must agree with the CSVs row for row (same users, histories cut to
    `max_history` items, targets)."""
    for s in SPLITS:
        path = layout["inter"][s]
        if not path.exists():
            continue
        with reading(path):
            lines = path.read_text(encoding="utf-8").splitlines()[1:]
        df = splits[s]
        if len(lines) != len(df):
            raise SidrecError(f"{path}: {len(lines)} rows but {layout[s]} has {len(df)}; the folder is inconsistent")
        for i, (line, u, h, t) in enumerate(zip(lines, df["user"], df["history"], df["target"])):
            parts = line.split("\t")
            if len(parts) == 3:
                parts[1] = " ".join(parts[1].rsplit(" ", max_history)[-max_history:])
            if len(parts) != 3 or parts != [str(u), " ".join(map(str, h)), str(t)]:
                raise SidrecError(f"{path}:{i + 2}: row disagrees with {layout[s].name} line {i + 2}")


# ---------------------------------------------------------------------------------------------------- writing
def export_minionerec(data: str | Path, out: str | Path, sids: str | Path | None = None) -> Path:
    """Write a canonical dataset (and its SIDs) as a MiniOneRec data folder at `out`."""
    t0 = time.time()
    data, out = Path(data), Path(out)
    ds = Dataset.load(data)
    sid_dir = Path(sids) if sids is not None else data / "sids"
    index_path = sid_dir / "index.json" if sid_dir.is_dir() else sid_dir
    if not index_path.exists():
        raise SidrecError(f"{index_path}: no SIDs to export; pass --sids with a folder holding index.json "
                          f"(from `sidrec sid build`)")
    _, index = load_sids(index_path)
    _check_sid_count(index_path, len(index), ds.num_items, data)
    category = ds.meta.get("category") or ds.meta.get("name") or "dataset"
    stem = ds.meta.get("minionerec_stem") or _stem_from_meta(ds.meta, category)
    titles = ds.titles()
    sid_str = {i: "".join(index[i]) for i in range(ds.num_items)}

    for s in SPLITS:
        df = ds.splits[s]
        hist = df["history"].tolist()
        table = pd.DataFrame({
            "user_id": [f"A{u}" for u in df["user"]],  # MiniOneRec's user id is "A" + the dense user index
            "history_item_title": [str([titles[i] for i in h]) for h in hist],
            "item_title": [titles[t] for t in df["target"]],
            "history_item_id": [str(list(h)) for h in hist],
            "item_id": df["target"].tolist(),
            "history_item_sid": [str([sid_str[i] for i in h]) for h in hist],
            "item_sid": [sid_str[t] for t in df["target"]],
        })
        with atomic_path(out / s / f"{stem}.csv") as tmp:
            table.to_csv(tmp, index=False)
        rows = "".join(f"{u}\t{' '.join(map(str, h))}\t{t}\n" for u, h, t in zip(df["user"], hist, df["target"]))
        write_text(out / "inter" / f"{category}.{s}.inter", INTER_HEADER + rows)

    write_text(out / "index" / f"{category}.index.json", json.dumps({str(i): index[i] for i in range(ds.num_items)}))
    item_json = {
        str(r.item_id): {"title": r.title, "description": r.description, "brand": r.brand,
                         "categories": ", ".join(r.categories) if len(r.categories) else ""}
        for r in ds.items.itertuples()
    }
    write_text(out / "index" / f"{category}.item.json", json.dumps(item_json, indent=2))
    write_text(out / "info" / f"{stem}.txt", "".join(f"{sid_str[i]}\t{titles[i]}\t{i}\n" for i in range(ds.num_items)))
    seqs = ds.user_sequences()
    write_text(out / "inter" / f"{category}.inter.json", json.dumps({str(u): seqs[u] for u in sorted(seqs)}, indent=2))
    write_manifest(out, "data.export-minionerec", config={"data": str(data), "sids": str(index_path)},
                   inputs={"index_json": index_path}, seconds=time.time() - t0)
    return out


def _check_sid_count(index_path: Path, num_sids: int, num_items: int, data: Path) -> None:
    if num_sids != num_items:
        missing = f"no SID for {num_items - num_sids} items" if num_sids < num_items else f"{num_sids - num_items} SIDs too many"
        raise SidrecError(f"{index_path}: {missing} of {data} ({num_items} items); were the SIDs built on another "
                          f"dataset?")


def _stem_from_meta(meta: dict, category: str) -> str:
    window = meta.get("window") or {}
    k = (meta.get("kcore") or {}).get("user_k", 5)
    if window.get("start") and window.get("end"):
        return f"{category}_{k}_{window['start']}-{window['end']}"
    return f"{category}_{k}"
