"""A/B testing for the service: routing by user, an impression log in SQLite, and the offline report.

Routing (`Router`): a user goes to a variant by a stable hash, the same on every machine and in every process
(never Python's `hash()`, which is salted per process): u = the first 8 bytes of sha256("{salt}/{user_id}") read as
a big-endian integer / 2**64, a number in [0, 1); the variants own consecutive slices of [0, 1) in the order they were
given, sized by the split ("50/50", "1/3/1", ...). `user_id` is hashed as its string form, so 42 and "42" route alike.

Impression log (`ImpressionLog`): one SQLite file in WAL mode with `synchronous=FULL`; every micro-batch's impressions
are written in one transaction that is committed before any of its responses is sent, so a response that reached a
client is on disk and a crash (even a kill -9 or a power cut) loses no committed row. Table `impressions`:
id, ts (unix seconds), session (the serve process that wrote it, table `sessions`), user_id (text), variant, history
(JSON list of item ids), k, items (JSON list of [item_id, score], best first).

Report (`ab_report`): each impression is matched to a row of a held-out split when its user_id equals the row's
`user` (the dataset's dense user id, compared as text) and its history equals the row's history exactly (same items,
same order). Unmatched impressions are counted and left out; when several impressions of one variant match the same
row, the first (lowest id) counts and the others are counted as duplicates. Each matched impression gives per-row
HR@K and NDCG@K (`sidrec.evaluate.metrics`: binary relevance, the target's rank among the returned items). The 95%
confidence interval of a variant's mean is the normal approximation mean ± 1.96·sd/√n on the per-row values
(`ci="normal"`, the default), or the 2.5/97.5 percentiles of the means of seeded bootstrap resamples: of rows
(`ci="bootstrap"`), or of whole users with all their rows (`ci="user-bootstrap"`). Rows of one user always go to the
same variant and are correlated, so the row-level intervals (normal, bootstrap) are somewhat narrower than the
user-level one; `user-bootstrap` is the conservative choice. The difference B−A (each variant against the control,
by default the first name in sorted order) is a difference of two independent means (the users are disjoint): its
normal interval uses sqrt(var_B/n_B + var_A/n_A), its bootstrap intervals resample both variants independently.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from sidrec.errors import SidrecError

DEFAULT_SALT = "sidrec-ab"
Z95 = 1.959963984540054


# ---------------------------------------------------------------------------------------------------- routing
def parse_split(split: str | None, n: int) -> list[float]:
    """"50/50" -> [0.5, 0.5]; None -> equal shares. Any positive numbers, normalised to sum to 1."""
    if split is None:
        return [1.0 / n] * n
    parts = [p.strip() for p in str(split).split("/")]
    try:
        weights = [float(p) for p in parts]
    except ValueError:
        raise SidrecError(f"--split {split!r}: write the shares as numbers separated by '/', e.g. 50/50") from None
    if len(weights) != n:
        raise SidrecError(f"--split {split!r} has {len(weights)} shares for {n} variant(s); give one share per --variant")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise SidrecError(f"--split {split!r}: shares must be non-negative numbers with a positive sum")
    total = sum(weights)
    return [w / total for w in weights]


def user_unit(user_id, salt: str = DEFAULT_SALT) -> float:
    """The user's stable position in [0, 1)."""
    digest = hashlib.sha256(f"{salt}/{user_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


class Router:
    """Assigns each user to one of `names` with probabilities `shares`, stably (see the module doc)."""

    def __init__(self, names: Sequence[str], shares: Sequence[float] | None = None, salt: str = DEFAULT_SALT):
        if not names:
            raise SidrecError("at least one variant is needed")
        if len(set(names)) != len(names):
            raise SidrecError(f"variant names must be unique, got {list(names)}")
        self.names = list(names)
        self.shares = list(shares) if shares is not None else [1.0 / len(names)] * len(names)
        if len(self.shares) != len(self.names):
            raise SidrecError(f"{len(self.shares)} shares for {len(self.names)} variants")
        self.salt = salt
        self.bounds = np.cumsum(self.shares).tolist()
        self.bounds[-1] = 1.0

    def route(self, user_id) -> str:
        if len(self.names) == 1:
            return self.names[0]
        u = user_unit(user_id, self.salt)
        for name, bound, share in zip(self.names, self.bounds, self.shares):
            if u < bound and share > 0:
                return name
        return next(n for n, s in zip(reversed(self.names), reversed(self.shares)) if s > 0)


# ---------------------------------------------------------------------------------------------------- logging
SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL,
    config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS impressions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    session INTEGER NOT NULL REFERENCES sessions(id),
    user_id TEXT NOT NULL,
    variant TEXT NOT NULL,
    history TEXT NOT NULL,
    k INTEGER NOT NULL,
    items TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS impressions_variant ON impressions(variant);
"""


@dataclass(frozen=True)
class Impression:
    user_id: str
    variant: str
    history: list[int]
    k: int
    items: list[tuple[int, float]]  # (item_id, score), best first
    ts: float = 0.0


class ImpressionLog:
    """Append-only impression log (WAL, synchronous=FULL, one transaction per `write` call); thread-safe."""

    def __init__(self, path: str | Path, config: dict | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            mode = self.conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise SidrecError(f"{self.path}: cannot open the impression log as SQLite ({e})") from None
        if str(mode).lower() != "wal":
            raise SidrecError(f"{self.path}: SQLite refused WAL mode (got {mode!r}); put the log on a local disk")
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            cur = self.conn.execute("INSERT INTO sessions (started, config) VALUES (?, ?)",
                                    (time.time(), json.dumps(config or {}, default=str)))
            self.conn.execute("COMMIT")
        self.session = cur.lastrowid

    def write(self, impressions: Sequence[Impression]) -> None:
        """Append `impressions` in one committed transaction (all or none)."""
        if not impressions:
            return
        if self.conn is None:
            raise RuntimeError(f"{self.path}: the impression log is closed")
        now = time.time()
        rows = [(imp.ts or now, self.session, str(imp.user_id), imp.variant, json.dumps(list(imp.history)), imp.k,
                 json.dumps([[int(i), float(s)] for i, s in imp.items])) for imp in impressions]
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.executemany("INSERT INTO impressions (ts, session, user_id, variant, history, k, items) "
                                      "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            except UnicodeEncodeError:  # a lone surrogate: the service refuses it first; other callers get told
                self.conn.execute("ROLLBACK")
                bad = [str(imp.user_id) for imp in impressions if not _encodable(str(imp.user_id))]
                raise SidrecError(f"{self.path}: user_id {bad[0] if bad else '?'!r} is not valid Unicode text (a lone "
                                  f"surrogate?); nothing of this batch was logged") from None
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def count(self) -> int:
        with self._lock:
            return self.conn.execute("SELECT COUNT(*) FROM impressions").fetchone()[0]

    def close(self) -> None:
        """Close (the last connection checkpoints the WAL into the main file); idempotent."""
        with self._lock:
            if self.conn is not None:
                self.conn.close()
                self.conn = None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def read_impressions(path: str | Path) -> list[dict]:
    """Every logged impression, in id order: dicts with id, ts, session, user_id, variant, history, k, items."""
    path = Path(path)
    if not path.is_file():
        raise SidrecError(f"{path}: no impression log here (`sidrec serve --log FILE` writes one)")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT id, ts, session, user_id, variant, history, k, items FROM impressions "
                                "ORDER BY id").fetchall()
            sessions = {sid: json.loads(cfg) for sid, cfg in conn.execute("SELECT id, config FROM sessions")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise SidrecError(f"{path}: not a sidrec impression log ({e})") from None
    out = []
    for id_, ts, session, user_id, variant, history, k, items in rows:
        out.append({"id": id_, "ts": ts, "session": session, "user_id": user_id, "variant": variant,
                    "history": json.loads(history), "k": k, "items": json.loads(items),
                    "session_config": sessions.get(session)})
    return out


# ---------------------------------------------------------------------------------------------------- report
MATCH_RULE = ("an impression matches a split row when its user_id equals the row's user (dense id, compared as text) "
              "and its history equals the row's history exactly (same items, same order); the first impression of a "
              "variant per row counts, later ones are duplicates; unmatched impressions are left out")


CI_METHODS = ("normal", "bootstrap", "user-bootstrap")


def _resampled_means(values: np.ndarray, groups: np.ndarray | None, method: str, rng: np.random.Generator,
                     resamples: int) -> np.ndarray:
    """`resamples` bootstrap means of `values`: rows drawn with replacement, or whole users (`user-bootstrap`)."""
    if method == "bootstrap" or groups is None:
        return values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    _, inverse = np.unique(groups, return_inverse=True)
    sums = np.bincount(inverse, weights=values)
    counts = np.bincount(inverse).astype(np.float64)
    draw = rng.integers(0, len(sums), size=(resamples, len(sums)))
    return sums[draw].sum(axis=1) / counts[draw].sum(axis=1)


def mean_ci(values: np.ndarray, method: str = "normal", rng: np.random.Generator | None = None,
            resamples: int = 2000, groups: np.ndarray | None = None) -> tuple[float, float]:
    """95% interval of the mean of `values` (see the module doc); `groups`: the user of each row."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n == 0:
        return (float("nan"), float("nan"))
    if method == "normal":
        half = Z95 * (values.std(ddof=1) / math.sqrt(n) if n > 1 else 0.0)
        return (float(values.mean() - half), float(values.mean() + half))
    means = _resampled_means(values, groups, method, rng or np.random.default_rng(0), resamples)
    return (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def diff_ci(b: np.ndarray, a: np.ndarray, method: str = "normal", rng: np.random.Generator | None = None,
            resamples: int = 2000, groups_b: np.ndarray | None = None,
            groups_a: np.ndarray | None = None) -> tuple[float, float]:
    """95% interval of mean(b) - mean(a) for two independent samples."""
    b, a = np.asarray(b, dtype=np.float64), np.asarray(a, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        return (float("nan"), float("nan"))
    d = b.mean() - a.mean()
    if method == "normal":
        var = (b.var(ddof=1) / len(b) if len(b) > 1 else 0.0) + (a.var(ddof=1) / len(a) if len(a) > 1 else 0.0)
        half = Z95 * math.sqrt(var)
        return (float(d - half), float(d + half))
    rng = rng or np.random.default_rng(0)
    diff = (_resampled_means(b, groups_b, method, rng, resamples)
            - _resampled_means(a, groups_a, method, rng, resamples))
    return (float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5)))


def per_row_metrics(ranks: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row HR@k and NDCG@k from 0-based target ranks (-1 = absent), as `hr_ndcg` averages them."""
    ranks = np.asarray(ranks)
    hit = (ranks >= 0) & (ranks < k)
    ndcg = np.where(hit, 1.0 / np.log2(np.where(ranks >= 0, ranks, 0) + 2.0), 0.0)
    return hit.astype(np.float64), ndcg


def ab_report(log: str | Path, data: str | Path, split: str = "test", k: int = 10, ci: str = "normal",
              control: str | None = None, resamples: int = 2000, seed: int = 0) -> dict:
    """Per-variant HR@k / NDCG@k of logged impressions against a split's held-out next items (module doc)."""
    from sidrec.data.canonical import SPLITS, Dataset
    from sidrec.evaluate.metrics import target_ranks

    if split not in SPLITS:
        raise SidrecError(f"--split {split!r} is not one of {', '.join(SPLITS)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise SidrecError(f"--k {k!r} must be a positive integer")
    if ci not in CI_METHODS:
        raise SidrecError(f"--ci {ci!r} is not one of {', '.join(CI_METHODS)}")
    impressions = read_impressions(log)
    df = Dataset.load(data).splits[split]
    rows: dict[tuple[str, tuple[int, ...]], int] = {}
    for r, (user, history) in enumerate(zip(df["user"].tolist(), df["history"].tolist())):
        rows.setdefault((str(user), tuple(int(i) for i in history)), r)
    targets = df["target"].tolist()

    matched: dict[str, dict[int, dict]] = {}
    unmatched = duplicates = 0
    short = 0
    names = sorted({imp["variant"] for imp in impressions})
    for imp in impressions:
        r = rows.get((str(imp["user_id"]), tuple(imp["history"])))
        if r is None:
            unmatched += 1
            continue
        per = matched.setdefault(imp["variant"], {})
        if r in per:
            duplicates += 1
            continue
        per[r] = imp
        if len(imp["items"]) < k:
            short += 1
    if control is None:
        control = names[0] if names else None
    elif names and control not in names:
        raise SidrecError(f"--control {control!r} is not a logged variant ({', '.join(names)})")

    rng = np.random.default_rng(seed)
    total_matched = sum(len(v) for v in matched.values())
    variants: dict[str, dict] = {}
    values: dict[str, dict[str, np.ndarray]] = {}
    groups: dict[str, np.ndarray] = {}
    for name in names:
        per = matched.get(name, {})
        row_ids = sorted(per)
        preds = [[int(item[0]) for item in per[r]["items"]] for r in row_ids]
        ranks = target_ranks(preds, [targets[r] for r in row_ids])
        hr, ndcg = per_row_metrics(ranks, k)
        values[name] = {f"HR@{k}": hr, f"NDCG@{k}": ndcg}
        groups[name] = np.array([str(per[r]["user_id"]) for r in row_ids], dtype=object)
        entry = {"impressions": sum(1 for imp in impressions if imp["variant"] == name), "rows": len(row_ids),
                 "share": len(row_ids) / total_matched if total_matched else float("nan"),
                 "users": len({per[r]["user_id"] for r in row_ids})}
        for metric, v in values[name].items():
            entry[metric] = float(v.mean()) if len(v) else float("nan")
            entry[f"{metric}_ci95"] = list(mean_ci(v, ci, rng, resamples, groups[name]))
        cfgs = {json.dumps((imp["session_config"] or {}).get("variants", {}).get(name), sort_keys=True)
                for imp in impressions if imp["variant"] == name}
        entry["served_by"] = [json.loads(c) for c in sorted(cfgs) if c != "null"]
        variants[name] = entry

    differences = {}
    for name in names:
        if name == control:
            continue
        d = {}
        for metric in (f"HR@{k}", f"NDCG@{k}"):
            b, a = values[name][metric], values[control][metric]
            d[metric] = float(b.mean() - a.mean()) if len(a) and len(b) else float("nan")
            d[f"{metric}_ci95"] = list(diff_ci(b, a, ci, rng, resamples, groups[name], groups[control]))
        differences[f"{name}-{control}"] = d

    return _finite({"log": str(log), "data": str(data), "split": split, "k": k,
            "ci": {"method": ci, "level": 0.95, **({"resamples": resamples, "seed": seed} if ci != "normal" else {})},
            "match_rule": MATCH_RULE, "impressions": len(impressions), "matched": total_matched,
            "unmatched": unmatched, "duplicates": duplicates, "short_lists": short, "split_rows": len(df),
            "control": control, "variants": variants, "differences": differences})


def _finite(obj):
    """NaN (a variant without matched rows) -> None, so that the JSON stays standard."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def print_ab_report(report: dict, console) -> None:
    from rich.table import Table

    k = report["k"]
    table = Table(title=f"A/B on {report['split']}: {report['matched']} matched impressions "
                        f"({report['unmatched']} unmatched, {report['duplicates']} duplicates), "
                        f"95% CI {report['ci']['method']}")
    for col in ("variant", "rows", "share", f"HR@{k}", "95% CI", f"NDCG@{k}", "95% CI "):
        table.add_column(col, justify="left" if col == "variant" else "right", no_wrap=True)

    def num(x, fmt=".4f"):
        return "n/a" if x is None else format(x, fmt)

    def short(x):  # 0.136 -> .136, -0.229 -> -.229
        return num(x, ".3f").replace("0.", ".", 1) if x is not None else "n/a"

    def fmt_ci(ci):
        return f"[{short(ci[0])}, {short(ci[1])}]"

    for name, v in report["variants"].items():
        table.add_row(name, str(v["rows"]), num(v["share"], ".1%"), num(v[f"HR@{k}"]), fmt_ci(v[f"HR@{k}_ci95"]),
                      num(v[f"NDCG@{k}"]), fmt_ci(v[f"NDCG@{k}_ci95"]))
    for name, d in report["differences"].items():
        table.add_row(name, "", "", num(d[f"HR@{k}"], "+.4f"), fmt_ci(d[f"HR@{k}_ci95"]),
                      num(d[f"NDCG@{k}"], "+.4f"), fmt_ci(d[f"NDCG@{k}_ci95"]))
    console.print(table)
