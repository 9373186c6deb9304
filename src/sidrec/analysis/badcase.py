"""Bad-case analysis of any evaluated model: which rows fail, and which failure patterns they share.

Input: an evaluation folder written by `sidrec.evaluate.harness.write_evaluation` (`results.json` +
`predictions.jsonl`), the canonical dataset it was evaluated on and, optionally, the SID table. A row *fails* when its
target is not among the first `top_k` predictions. Every row gets a value for each pattern below: True, False, or
None when the pattern cannot be decided for that row (None rows are left out of that pattern's rates).

Patterns (thresholds in `AnalysisConfig`, YAML section `analysis:`):

- ``cold_start``: the target is a train target at most `cold_start_max_count` times
  (`Dataset.train_target_counts()`).
- ``long_tail``: the target is among the least-popular `long_tail_percent` % of the catalogue. Popularity is the
  train-target count; an item is in the tail when fewer than `long_tail_percent` % of all items are strictly less
  popular than it. Ties at the boundary are all in the tail, so the tail can hold a little more than that share of
  items; the report records the actual share and the threshold count.
- ``short_history``: the row's history (the split row with the same `row` index) has at most
  `short_history_max_len` items.
- ``category_mismatch``: the target's category differs from the history's dominant category: the category held by
  the most history items, ties going to the one seen most recently. History items with no category are skipped;
  None when the target or every history item has none. The category is the item table's `categories[level]`
  (`category_source: items`) where `level` is `category_level` when set, else detected: 1 (the first level below
  an Amazon-style root) when at least half of the items with categories have a second level, else 0 (categories of
  a single level). A detected level whose known values are all one category says nothing and is not used; a set
  level that no item has is an error. Otherwise the first `sid_category_levels` SID codes (`category_source: sid`,
  needs `--sids`). With neither, the pattern is reported unavailable. The report records the level used
  (`patterns.category_mismatch.category_level`).
- ``recency_bias``: the top prediction is closer to the older history than to the most recent item. With a history
  h_1..h_n (oldest first, n >= 2) the *old part* is h_1..h_m with m = max(1, floor(n * recency_old_fraction)),
  capped at n - 1; the row has the pattern when max_{j<=m} sim(top, h_j) > sim(top, h_n) (strictly). sim is the SID
  prefix overlap (number of leading SID levels two items share, 0..L) when SIDs are given, else 1/0 for
  same/different item category, else the pattern is unavailable. None for rows with one history item or no
  predictions.

Per pattern the report gives its rate among failures and among successes (rows with the pattern / rows where it
is decided), the lift (rate among failures / rate among successes; None when the latter is 0) with its 95 % interval
(`lift_ci95`, Katz's log interval: `sidrec.evaluate.stats.lift_interval`), and the failure rate with and without it.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import Field

from sidrec.config import StageConfig
from sidrec.data.canonical import SPLITS, Dataset
from sidrec.errors import SidrecError
from sidrec.evaluate.harness import check_alignment, load_eval
from sidrec.evaluate.stats import lift_interval
from sidrec.io import write_json, write_jsonl, write_manifest, write_text
from sidrec.tasks.builders import old_part

PATTERNS = ("cold_start", "long_tail", "short_history", "category_mismatch", "recency_bias")
REPORT = "badcase_report.json"
ROWS = "eval_results.jsonl"
VIS = "visualizations"
NOT_IN_LIST = "not_in_list"


class AnalysisConfig(StageConfig):
    top_k: int = Field(10, ge=1)  # a row fails when its target is not in the top K
    cold_start_max_count: int = Field(2, ge=0)  # cold_start: target seen <= this many times as a train target
    long_tail_percent: float = Field(20.0, gt=0, le=100)  # long_tail: least-popular share of items, in %
    short_history_max_len: int = Field(3, ge=0)  # short_history: history length <= this
    category_source: Literal["auto", "items", "sid"] = "auto"  # auto: items' categories if any, else SID
    category_level: int | None = Field(None, ge=0)  # entry of items.categories (0 = the root); None: detected
    sid_category_levels: int = Field(1, ge=1)  # leading SID codes that make the semantic category
    recency_old_fraction: float = Field(0.5, gt=0, lt=1)  # share of the history (oldest first) that is "old"


# ---------------------------------------------------------------------------------------------------- identity
def targets_hash(targets: Sequence[int]) -> str:
    return hashlib.sha256(np.asarray(targets, dtype="<i8").tobytes()).hexdigest()[:16]


def dataset_identity(ds: Dataset, split: str) -> dict:
    """What a later stage compares to know a report belongs to this dataset and split."""
    targets = ds.splits[split]["target"].to_numpy()
    return {"name": ds.meta.get("name"), "num_items": int(ds.num_items), "split": split,
            "num_rows": int(len(targets)), "targets_sha256": targets_hash(targets)}


def check_identity(report: dict, ds: Dataset, source: str | Path = REPORT) -> None:
    """Raise unless `report` (a badcase report) was computed on `ds`."""
    ident = report.get("dataset")
    if not ident:
        raise SidrecError(f"{source}: no dataset identity recorded; re-run `sidrec analyze`")
    mine = dataset_identity(ds, ident.get("split", "test"))
    if ident != mine:
        diff = ", ".join(f"{k}: report {ident.get(k)!r} vs dataset {mine.get(k)!r}"
                         for k in mine if ident.get(k) != mine.get(k))
        raise SidrecError(f"{source}: the report is from another dataset ({diff})")


# ---------------------------------------------------------------------------------------------------- pattern pieces
def long_tail_items(counts: np.ndarray, percent: float) -> tuple[np.ndarray, int]:
    """Per-item tail flag and the largest train count inside the tail (see the module doc for ties)."""
    counts = np.asarray(counts)
    s = np.sort(counts)
    idx = max(0, math.ceil(len(s) * percent / 100.0) - 1)
    threshold = int(s[min(idx, len(s) - 1)])
    return counts <= threshold, threshold


def category_level(categories: Sequence, level: int | None) -> tuple[int | None, str]:
    """The level of items.categories to use (module doc) and, when none, why."""
    lists = [c for c in categories if c is not None and len(c) and c[0] not in (None, "")]
    if not lists:
        return None, "items.categories is empty"
    depth = max(len(c) for c in lists)
    if level is not None:
        if level >= depth:
            raise SidrecError(f"analysis.category_level={level}: items.categories has at most {depth} level(s) "
                              f"(0..{depth - 1}); set analysis.category_level to one of those or leave it unset")
        return level, ""
    level = 1 if 2 * sum(len(c) > 1 for c in lists) >= len(lists) else 0
    known = {c[level] for c in lists if len(c) > level and c[level] not in (None, "")}
    if len(known) < 2:
        return None, f"items.categories level {level} holds one category ({next(iter(known))!r}) for every item"
    return level, ""


def item_categories(ds: Dataset, cfg: AnalysisConfig, codes: np.ndarray | None
                    ) -> tuple[list | None, str, str, int | None]:
    """(category per item or None, source used, why unavailable, items level used). Unknown categories are None."""
    reason = ""
    if cfg.category_source in ("auto", "items") and "categories" in ds.items:
        raw = ds.items["categories"].tolist()
        level, reason = category_level(raw, cfg.category_level)
        if level is not None:
            cats = [c[level] if c is not None and len(c) > level and c[level] not in (None, "") else None for c in raw]
            return cats, "items", "", level
    elif cfg.category_source in ("auto", "items"):
        reason = "the items table has no categories column"
    if cfg.category_source == "items":
        return None, "none", reason, None
    if codes is not None:
        k = min(cfg.sid_category_levels, codes.shape[1])
        return [tuple(int(x) for x in row[:k]) for row in codes], "sid", "", None
    return None, "none", "; ".join(r for r in (reason, "no SIDs given (--sids)") if r), None


def dominant_category(history: Sequence[int], cats: Sequence) -> Any:
    """The most frequent known category in `history` (oldest first); ties go to the one seen most recently."""
    count: Counter = Counter()
    last: dict = {}
    for pos, it in enumerate(history):
        c = cats[it]
        if c is not None:
            count[c] += 1
            last[c] = pos
    if not count:
        return None
    return max(count, key=lambda c: (count[c], last[c]))


def category_mismatch(history: Sequence[int], target: int, cats: Sequence) -> bool | None:
    dom = dominant_category(history, cats)
    if dom is None or cats[target] is None:
        return None
    return cats[target] != dom


def sid_prefix_overlap(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading SID levels two SIDs share (-1 pads variable-length SIDs and never matches)."""
    n = 0
    for x, y in zip(a, b):
        if x < 0 or y < 0 or x != y:
            break
        n += 1
    return n


def recency_bias(history: Sequence[int], top: int | None, sim, fraction: float) -> bool | None:
    m = old_part(len(history), fraction)
    if m == 0 or top is None:
        return None
    return max(sim(top, h) for h in history[:m]) > sim(top, history[-1])


def rate(num: int, den: int) -> float | None:
    return num / den if den else None


def pattern_stats(flags: Sequence[bool | None], failed: np.ndarray) -> dict:
    """Rates of a pattern among failures and successes, lift, and failure rate with/without the pattern."""
    f = np.array([x is True for x in flags])
    known = np.array([x is not None for x in flags])
    failed = np.asarray(failed, dtype=bool)
    fk, sk = known & failed, known & ~failed
    out = {
        "applicable_rows": int(known.sum()),
        "rows_with_pattern": int(f.sum()),
        "failures": {"rows": int(fk.sum()), "with_pattern": int((f & failed).sum())},
        "successes": {"rows": int(sk.sum()), "with_pattern": int((f & ~failed).sum())},
    }
    out["failures"]["rate"] = rate(out["failures"]["with_pattern"], out["failures"]["rows"])
    out["successes"]["rate"] = rate(out["successes"]["with_pattern"], out["successes"]["rows"])
    rf, rs = out["failures"]["rate"], out["successes"]["rate"]
    out["lift"] = rf / rs if rf is not None and rs else None
    ci = lift_interval(out["failures"]["with_pattern"], out["failures"]["rows"], out["successes"]["with_pattern"],
                       out["successes"]["rows"]) if out["rows_with_pattern"] else None
    out["lift_ci95"] = [round(x, 6) for x in ci] if ci else None
    out["failure_rate_with"] = rate(int((f & failed).sum()), int(f.sum()))
    out["failure_rate_without"] = rate(int((known & ~f & failed).sum()), int((known & ~f).sum()))
    return out


def rank_distribution(ranks: Sequence[int | None], list_len: int) -> dict:
    """Counts of the target's 1-based rank 1..list_len, and of rows where it is not in the list."""
    by_rank = Counter(r for r in ranks if r is not None)
    return {"list_length": int(list_len),
            "by_rank": {str(r): int(by_rank.get(r, 0)) for r in range(1, list_len + 1)},
            NOT_IN_LIST: int(sum(r is None for r in ranks)), "rows": len(ranks)}


# ---------------------------------------------------------------------------------------------------- inputs
# ---------------------------------------------------------------------------------------------------- analysis
def sid_codebook(sids: str | Path | None, codes: np.ndarray) -> int:
    """Codes per level: the build's `codebook` setting (manifest.json of a `sidrec sid build` folder), else the
    largest code + 1 (a bare index.json)."""
    from sidrec.io import read_manifest

    folder = Path(sids) if sids is not None else None
    if folder is not None and folder.is_file():
        folder = folder.parent
    manifest = read_manifest(folder) if folder is not None else None
    cb = ((manifest or {}).get("config") or {}).get("codebook")
    return max(int(cb), int(codes.max()) + 1) if isinstance(cb, int) else int(codes.max()) + 1


def _sid_section(codes: np.ndarray, targets: np.ndarray, failed: np.ndarray, codebook: int) -> dict:
    from sidrec.sid.base import group_ids, sid_quality

    q = sid_quality(codes, codebook)
    per_level = []  # items per SID prefix of length level + 1 (a node of the decoding trie)
    for lv in range(codes.shape[1]):
        has = codes[:, lv] >= 0
        used = np.bincount(group_ids(codes[has, : lv + 1]))
        per_level.append({"level": lv, "prefixes": int(len(used)), "mean": round(float(used.mean()), 3),
                          "median": float(np.median(used)), "max": int(used.max()), "min": int(used.min())})
    q["items_per_code"] = per_level
    gid = group_ids(codes)
    size = np.bincount(gid)
    q["items_per_sid"] = {str(int(k)): int(v) for k, v in zip(*np.unique(size, return_counts=True))}
    collided = size[gid[targets]] > 1
    q["target_collided"] = {"rows": int(collided.sum()), "failure_rate_collided": rate(int((collided & failed).sum()),
                                                                                       int(collided.sum())),
                            "failure_rate_unique": rate(int((~collided & failed).sum()), int((~collided).sum()))}
    return q


def analyze_rows(rows: list[dict], ds: Dataset, split: str, cfg: AnalysisConfig,
                 codes: np.ndarray | None = None, codebook: int | None = None) -> tuple[list[dict], dict]:
    """Per-row records (rank, hit, patterns) and the aggregate report body; no I/O."""
    df = ds.splits[split]
    histories = df["history"].tolist()
    counts = ds.train_target_counts()
    tail, tail_threshold = long_tail_items(counts, cfg.long_tail_percent)
    cats, cat_source, cat_reason, cat_level = item_categories(ds, cfg, codes)
    if codes is not None:
        sim, sim_name = (lambda a, b: sid_prefix_overlap(codes[a], codes[b])), "sid_prefix_overlap"
    elif cats is not None:
        sim, sim_name = (lambda a, b: int(cats[a] is not None and cats[a] == cats[b])), "same_category"
    else:
        sim, sim_name = None, "none"
    list_len = max(len(r["predictions"]) for r in rows)
    if cfg.top_k > list_len:
        raise SidrecError(f"top_k {cfg.top_k} is more than the {list_len} predictions per row; use --top-k "
                          f"<= {list_len}")

    records, ranks = [], []
    for row in rows:
        i, target, preds = row["row"], int(row["target"]), row["predictions"]
        hist = histories[i]
        rank = preds.index(target) + 1 if target in preds else None
        ranks.append(rank)
        top = preds[0] if preds else None
        patterns = {
            "cold_start": bool(counts[target] <= cfg.cold_start_max_count),
            "long_tail": bool(tail[target]),
            "short_history": len(hist) <= cfg.short_history_max_len,
            "category_mismatch": category_mismatch(hist, target, cats) if cats is not None else None,
            "recency_bias": recency_bias(hist, top, sim, cfg.recency_old_fraction) if sim is not None else None,
        }
        rec = {"row": i}
        if "user" in row:
            rec["user"] = row["user"]
        rec.update({"target": target, "rank": rank, "hit": rank is not None and rank <= cfg.top_k,
                    "history_len": len(hist), "target_train_count": int(counts[target]), "patterns": patterns,
                    "predictions": preds})
        rec.update({k: v for k, v in row.items() if k not in rec})
        records.append(rec)

    failed = np.array([not r["hit"] for r in records])
    unavailable = {"category_mismatch": cat_reason if cats is None else "",
                   "recency_bias": "no SIDs given (--sids) and no item categories" if sim is None else ""}
    patterns = {}
    for name in PATTERNS:
        flags = [r["patterns"][name] for r in records]
        st = pattern_stats(flags, failed)
        st["available"] = st["applicable_rows"] > 0
        if not st["available"]:
            st["reason"] = unavailable.get(name) or "no row where the pattern can be decided"
        patterns[name] = st
    patterns["long_tail"]["threshold_count"] = tail_threshold
    patterns["long_tail"]["tail_items_share"] = round(float(tail.mean()), 4)
    patterns["category_mismatch"]["category_source"] = cat_source
    patterns["category_mismatch"]["category_level"] = cat_level
    if cat_source == "sid":
        patterns["category_mismatch"]["sid_category_levels"] = min(cfg.sid_category_levels, codes.shape[1])
    patterns["recency_bias"]["similarity"] = sim_name

    body = {
        "num_rows": len(records),
        "top_k": cfg.top_k,
        "failures": int(failed.sum()),
        "successes": int((~failed).sum()),
        "failure_rate": float(failed.mean()),
        "patterns": patterns,
        "rank_distribution": rank_distribution(ranks, list_len),
    }
    if codes is not None:
        body["sid_quality"] = _sid_section(codes, np.array([r["target"] for r in records]), failed,
                                           codebook or int(codes.max()) + 1)
    return records, body


def load_codes(sids: str | Path, ds: Dataset) -> np.ndarray:
    from sidrec.sid.io import load_sids

    codes, _ = load_sids(sids)
    if len(codes) != ds.num_items:
        raise SidrecError(f"{sids}: SIDs for {len(codes)} items but the dataset has {ds.num_items}; give the SID "
                          f"folder built for this dataset")
    return codes


def run_analysis(eval_dir: str | Path, data: str | Path, out: str | Path, cfg: AnalysisConfig | None = None,
                 sids: str | Path | None = None) -> dict:
    """`sidrec analyze`: writes OUT/eval_results.jsonl, OUT/badcase_report.json, OUT/visualizations/, manifest."""
    from sidrec.analysis.plots import summary_text, write_plots

    t0 = time.time()
    cfg = cfg or AnalysisConfig()
    eval_dir, out = Path(eval_dir), Path(out)
    results, rows, pred_path = load_eval(eval_dir)
    ds = Dataset.load(data)
    split = results.get("split", "test")
    if split not in SPLITS:
        raise SidrecError(f"{eval_dir / 'results.json'}: split {split!r} is not one of {', '.join(SPLITS)}")
    if results.get("num_samples") not in (None, len(rows)):
        raise SidrecError(f"{eval_dir}: results.json counts {results['num_samples']} rows but predictions.jsonl has "
                          f"{len(rows)}; the folder mixes two evaluations, re-run it")
    check_alignment(rows, ds, split, pred_path)
    codes = load_codes(sids, ds) if sids is not None else None

    records, body = analyze_rows(rows, ds, split, cfg, codes, sid_codebook(sids, codes) if sids is not None else None)
    report = {
        "dataset": dataset_identity(ds, split),
        "eval": str(eval_dir),
        "model": results.get("model"),
        "sids": str(sids) if sids is not None else None,
        "metrics": results.get("metrics"),
        "config": cfg.model_dump(),
        "definitions": DEFINITIONS,
        **body,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)
    write_jsonl(out / ROWS, records)
    write_json(out / REPORT, report)
    write_plots(report, out / VIS)
    write_text(out / VIS / "summary_report.txt", summary_text(report))
    inputs = {"results": eval_dir / "results.json", "predictions": pred_path, "dataset": data}
    if sids is not None:
        inputs["sids"] = sids
    write_manifest(out, "analyze", config=cfg.model_dump(), inputs=inputs, seconds=time.time() - t0,
                   extra={"dataset": report["dataset"]})
    return report


DEFINITIONS = {
    "failure": "target not among the first top_k predictions",
    "cold_start": "target is a train target <= cold_start_max_count times",
    "long_tail": "fewer than long_tail_percent % of items are strictly less popular (train-target count) than the "
                 "target",
    "short_history": "history length <= short_history_max_len",
    "category_mismatch": "target category != the history's most frequent category (ties: most recent); category = "
                         "items.categories[level] (category_level, else detected: 1 when most items have "
                         "a second level, else 0), else the first sid_category_levels SID codes",
    "recency_bias": "history oldest first, n >= 2; old = first max(1, floor(n * recency_old_fraction)) items "
                    "(< n); max sim(top-1, old) > sim(top-1, most recent item); sim = SID prefix overlap, else "
                    "same category",
    "lift": "rate among failures / rate among successes; lift_ci95: Katz 95 % log interval",
}
