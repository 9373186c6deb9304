"""Hybrid ranking: re-rank a generative model's top beams with a collaborative scorer (SASRec, or an ensemble).

For each row, the first `group` beams (all by default) are re-ordered by

    fused = beam log-likelihood + λ · z,   z = the scorer's logit of the beam's item, z-scored within the row's group

(the KL-regularised optimum of GRPO with the collaborative reward, `bench/rl_fusion_bound.py`); beams below the group
keep their order, λ = 0 is the model's own ranking. λ is picked on the VALID split (`pick_weight`), never on test.

- `fuse` / `rerank_beams`: the pure re-ranking (what a serving layer calls with its `BeamResult`);
- `pick_weight`: λ with the best valid metric on a grid;
- `rerank_eval`: an evaluation folder (`sidrec eval --out`) + a scorer -> a re-ranked evaluation folder written by the
  same harness, with `gains.json` (valid and test, overall and per row group).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from sidrec.errors import SidrecError

GRID = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
METRIC = "NDCG@10"
HISTORY_BUCKETS = ((1, 2), (3, 5), (6, 10), (11, 20), (21, None))  # history length, inclusive
POPULARITY_BUCKETS = ((0, 0), (1, 9), (10, 99), (100, None))  # target's count among train targets, inclusive


# ---------------------------------------------------------------------------------------------------- pure fusion
def check_weight(weight) -> float:
    """λ as a float; a SidrecError unless it is a finite number >= 0."""
    try:
        w = float(weight)
    except (TypeError, ValueError):
        raise SidrecError(f"re-rank weight {weight!r} is not a number; give λ >= 0 or 'auto'") from None
    if not math.isfinite(w) or w < 0:
        raise SidrecError(f"re-rank weight {weight!r} is out of range; λ must be a finite number >= 0 (0 keeps the "
                          f"model's order) or 'auto' (picked on valid)")
    return w


def zscores(logits: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Each row of (n, B) `logits` z-scored over its `valid` beams (population std); others and constant rows 0."""
    from sidrec.train.rewards import group_zscores

    return group_zscores(np.asarray(logits, dtype=np.float64), valid)


def fused_scores(scores: np.ndarray, logits: np.ndarray, weight: float, group: int | None = None) -> np.ndarray:
    """(n, B) beam log-likelihood + λ · z(logits) over the first `group` beams; beams past the group keep their score
    and missing beams (score -inf) stay -inf."""
    scores = np.asarray(scores, dtype=np.float64)
    g = scores.shape[1] if group is None else min(int(group), scores.shape[1])
    head = scores[:, :g]
    valid = np.isfinite(head)
    z = zscores(np.where(valid, np.asarray(logits, dtype=np.float64)[:, :g], 0.0), valid)
    return np.concatenate([np.where(valid, head + check_weight(weight) * z, -np.inf), scores[:, g:]], axis=1)


def fuse(scores: np.ndarray, logits: np.ndarray, weight: float, group: int | None = None) -> np.ndarray:
    """(n, B) beam positions in fused order: the first `group` beams sorted by `fused_scores` (ties keep the beam
    order), then the rest as they were."""
    scores = np.asarray(scores, dtype=np.float64)
    g = scores.shape[1] if group is None else min(int(group), scores.shape[1])
    head = np.argsort(-fused_scores(scores, logits, weight, g)[:, :g], axis=1, kind="stable")
    tail = np.broadcast_to(np.arange(g, scores.shape[1]), (len(scores), scores.shape[1] - g))
    return np.concatenate([head, tail], axis=1)


def beam_logits(scorer, histories: Sequence[Sequence[int]], beam_items: np.ndarray, users=None,
                chunk: int = 512) -> np.ndarray:
    """(n, B) the scorer's logit of each beam's item given its row's history; -1 (no beam) gets 0."""
    beam_items = np.asarray(beam_items, dtype=np.int64)
    cands = np.where(beam_items >= 0, beam_items, 0)
    needs_users = getattr(scorer, "needs_users", False)
    if needs_users and users is None:
        raise SidrecError("a cross-fitted scorer needs each row's user id")
    parts = []
    for i in range(0, len(cands), chunk):
        hist, cand = [list(h) for h in histories[i:i + chunk]], cands[i:i + chunk].tolist()
        parts.append(scorer.score(hist, cand, users=users[i:i + chunk]) if needs_users else scorer.score(hist, cand))
    out = np.concatenate(parts).astype(np.float64) if parts else np.zeros(cands.shape)
    return np.where(beam_items >= 0, out, 0.0)


def rerank_beams(histories: Sequence[Sequence[int]], sid_index: np.ndarray, scores: np.ndarray, scorer,
                 weight: float, first_item: np.ndarray, users=None, group: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank beam-search output (`Recommender.rank`: sid_index, scores) with `scorer`; `first_item` maps a SID index
    to the item it stands for (`SidTrie.first_items()`). Returns (sid_index, fused scores), both in the new order."""
    sid_index = np.asarray(sid_index, dtype=np.int64)
    items = np.where(sid_index >= 0, np.asarray(first_item)[np.maximum(sid_index, 0)], -1)
    logits = beam_logits(scorer, histories, items, users)
    fused = fused_scores(scores, logits, weight, group)
    order = fuse(scores, logits, weight, group)
    return np.take_along_axis(sid_index, order, 1), np.take_along_axis(fused, order, 1)


def ranked_items(order: np.ndarray, beam_items: Sequence[Sequence[Sequence[int]]], limit: int = 50) -> list[list[int]]:
    """Item ids per row, beams in `order`, each beam's items (a SID's colliding items) in turn, at most `limit`."""
    out = []
    for row, items in zip(np.asarray(order).tolist(), beam_items):
        ranked = [it for b in row if b < len(items) for it in items[b]]
        out.append(ranked[:limit])
    return out


def pick_weight(scores: np.ndarray, logits: np.ndarray, beam_items, targets: Sequence[int],
                grid: Sequence[float] = GRID, metric: str = METRIC, group: int | None = None
                ) -> tuple[float, dict[float, dict]]:
    """The λ of `grid` whose fused ranking has the best `metric` (exact items, as the harness scores them) on these
    rows, the smallest λ on ties; and every grid point's metrics."""
    from sidrec.evaluate.metrics import hr_ndcg, target_ranks

    if not len(grid):
        raise SidrecError("the re-rank weight grid is empty")
    table = {}
    for w in sorted(check_weight(w) for w in grid):
        ranks = target_ranks(ranked_items(fuse(scores, logits, w, group), beam_items), targets)
        table[w] = hr_ndcg(ranks)
    if metric not in next(iter(table.values())):
        raise SidrecError(f"unknown metric {metric!r}; choose from {', '.join(next(iter(table.values())))}")
    best = max(table, key=lambda w: (table[w][metric], -w))
    return best, table


# ---------------------------------------------------------------------------------------------------- scorer + folders
def _model_folder(path: str | Path) -> Path:
    path = Path(path)
    return path / "model" if (path / "model").is_dir() else path


def load_checked_scorer(paths: Sequence[str | Path], ds, codes: np.ndarray, sids: str | Path = "the SID index"):
    """`load_scorer` over SASRec run folders (several: averaged), checked against the dataset and the SIDs: the same
    catalogue size and, where the run recorded one, the same dataset fingerprint. Returns (scorer, description)."""
    from sidrec.baselines.sasrec import load_scorer
    from sidrec.io import read_manifest

    paths = [str(p) for p in paths]
    if not paths:
        raise SidrecError("--rerank needs at least one SASRec run folder")
    scorer = load_scorer(paths[0] if len(paths) == 1 else paths)
    names = ", ".join(paths)
    if scorer.num_items != len(codes):
        raise SidrecError(f"{names}: the scorer's catalogue has {scorer.num_items} items but {sids} gives SIDs to "
                          f"{len(codes)}; its catalogue does not match the SIDs' (train SASRec on the dataset the SIDs "
                          f"were built for)")
    if scorer.num_items != ds.num_items:
        raise SidrecError(f"{names}: the scorer was trained on another item set ({scorer.num_items} items; the dataset "
                          f"has {ds.num_items}); train it with `sidrec baseline sasrec --data` on this dataset")
    mine, fingerprints = ds.fingerprint(), []
    for p in paths:
        fp = (read_manifest(_model_folder(p)) or {}).get("data_fingerprint")
        if fp is not None and fp != mine:
            raise SidrecError(f"{p}: the scorer was trained on another dataset (fingerprint {fp}; this dataset's is "
                              f"{mine}); train it with `sidrec baseline sasrec --data` on this dataset")
        fingerprints.append(fp)
    return scorer, {"paths": paths, "num_items": scorer.num_items, "data_fingerprints": fingerprints,
                    "dataset_checked": all(fp is not None for fp in fingerprints)}


def load_beams(eval_dir: str | Path, ds, items_of_sid: dict[str, list[int]]) -> dict:
    """A generative evaluation folder's beams, aligned with its split: histories, users, targets, scores (n, B; -inf
    where a row has fewer beams), beam_items (per row, per beam, the SID's items), first (n, B; -1 pad)."""
    from sidrec.analysis.badcase import check_alignment, load_eval

    results, rows, pred_path = load_eval(eval_dir)
    split = results.get("split")
    if split not in ds.splits:
        raise SidrecError(f"{Path(eval_dir) / 'results.json'}: split {split!r} is not a split of the dataset")
    for line, row in enumerate(rows, 1):
        if "predicted_sids" not in row or "scores" not in row or len(row["scores"]) != len(row["predicted_sids"]):
            raise SidrecError(f"{pred_path}:{line}: no predicted_sids with one beam score each; re-ranking needs the "
                              f"folder of a generative `sidrec eval`")
        if row["row"] != line - 1:
            raise SidrecError(f"{pred_path}:{line}: row {row['row']} is out of order; expected the rows of "
                              f"`sidrec eval` (0, 1, 2, ...)")
    check_alignment(rows, ds, split, pred_path)
    width = max(len(r["predicted_sids"]) for r in rows)
    scores = np.full((len(rows), width), -np.inf)
    first = np.full((len(rows), width), -1, dtype=np.int64)
    beam_items = []
    for line, row in enumerate(rows, 1):
        missing = [s for s in row["predicted_sids"] if s not in items_of_sid]
        if missing:
            raise SidrecError(f"{pred_path}:{line}: SID {missing[0]} is not in the SID index; give the --sids folder "
                              f"the model was evaluated with")
        k = len(row["predicted_sids"])
        scores[line - 1, :k] = row["scores"]
        beam_items.append([items_of_sid[s] for s in row["predicted_sids"]])
        first[line - 1, :k] = [items[0] for items in beam_items[-1]]
    df = ds.splits[split].iloc[:len(rows)]
    return {"dir": str(eval_dir), "split": split, "results": results, "rows": rows,
            "histories": [list(h) for h in df["history"]], "users": df["user"].to_numpy(),
            "targets": df["target"].tolist(), "scores": scores, "first": first, "beam_items": beam_items}


def row_groups(ds, split: str, num_rows: int) -> dict[str, np.ndarray]:
    """Boolean masks over a split's first `num_rows` rows: all; users with / without a training row; history length
    buckets; the target's popularity (count among train targets) buckets."""
    df = ds.splits[split].iloc[:num_rows]
    train_users = set(ds.splits["train"]["user"].tolist())
    has_train = df["user"].isin(train_users).to_numpy()
    groups = {"all": np.ones(len(df), bool), "user with a train row": has_train, "user without a train row": ~has_train}
    length = np.array([len(h) for h in df["history"]])
    pop = ds.train_target_counts()[df["target"].to_numpy()]
    for prefix, values, buckets in (("history", length, HISTORY_BUCKETS), ("target popularity", pop,
                                                                            POPULARITY_BUCKETS)):
        for lo, hi in buckets:
            name = f"{prefix} {lo}+" if hi is None else f"{prefix} {lo}" if lo == hi else f"{prefix} {lo}-{hi}"
            groups[name] = (values >= lo) & (values <= (np.inf if hi is None else hi))
    return groups


def group_gains(base_ranks: np.ndarray, new_ranks: np.ndarray, groups: dict[str, np.ndarray],
                ks: Sequence[int] = (10,)) -> dict[str, dict]:
    """Per group: rows, the model's and the re-ranked HR/NDCG@K, the relative NDCG gain and its paired-bootstrap 95 %
    interval (`evaluate.stats`); empty groups are left out."""
    from sidrec.evaluate.metrics import hr_ndcg
    from sidrec.evaluate.stats import compare_ranks

    out = {}
    key = f"NDCG@{ks[0]}"
    for name, mask in groups.items():
        if not mask.any():
            continue
        boot = compare_ranks(base_ranks[mask], new_ranks[mask], [key])[key]
        out[name] = {"rows": int(mask.sum()), "model": hr_ndcg(base_ranks[mask], ks),
                     "reranked": hr_ndcg(new_ranks[mask], ks), "gain": boot["rel"], "gain_ci95": boot["rel_ci"]}
    return out


def rerank_eval(eval_dir: str | Path, data_dir: str | Path, scorer_paths: Sequence[str | Path], out: str | Path,
                weight: float | str = "auto", valid_eval: str | Path | None = None, sids: str | Path | None = None,
                grid: Sequence[float] = GRID, metric: str = METRIC, group: int | None = None) -> dict:
    """Re-rank the beams of a generative evaluation folder with a SASRec scorer and write the re-ranked folder to
    `out` through the harness (results.json, predictions.jsonl, manifest.json), the re-ranked valid folder to
    `out/valid` when `valid_eval` is given, and `out/gains.json`. `weight`: λ >= 0, or "auto" to pick it on
    `valid_eval` (a `sidrec eval --split valid` folder of the same model). Returns the gains report."""
    import time

    from sidrec.analysis.badcase import load_eval
    from sidrec.data.canonical import Dataset
    from sidrec.evaluate.harness import write_evaluation
    from sidrec.evaluate.metrics import hr_ndcg, target_ranks
    from sidrec.io import write_json
    from sidrec.sid.io import load_sids
    from sidrec.tasks.builders import check_sid_coverage
    from sidrec.tasks.template import sid_text

    t0 = time.time()
    auto = isinstance(weight, str) and weight.strip().lower() == "auto"
    weight = None if auto else check_weight(weight)
    if group is not None and (isinstance(group, bool) or int(group) < 1):
        raise SidrecError(f"re-rank group {group!r} must be a positive number of beams")
    from sidrec.evaluate.metrics import KS

    if metric not in {f"{m}@{k}" for m in ("HR", "NDCG") for k in KS}:
        raise SidrecError(f"unknown metric {metric!r}; choose HR@K or NDCG@K with K in {KS}")
    ks = (int(metric.split("@")[1]),)
    if auto and valid_eval is None:
        raise SidrecError("--rerank-weight auto picks λ on valid: give the valid evaluation folder (--valid-eval)")
    ds = Dataset.load(data_dir)
    sids = sids or load_eval(eval_dir)[0].get("sids")
    if sids is None:
        raise SidrecError(f"{eval_dir}: results.json records no SID folder; pass --sids")
    codes, _ = load_sids(sids)
    scorer, scorer_info = load_checked_scorer(scorer_paths, ds, codes, sids)
    check_sid_coverage(ds, codes)
    sid_strings = [sid_text(c) for c in codes]
    items_of_sid: dict[str, list[int]] = {}
    for item, s in enumerate(sid_strings):
        items_of_sid.setdefault(s, []).append(item)

    splits = {"test": load_beams(eval_dir, ds, items_of_sid)}
    if valid_eval is not None:
        splits["valid"] = load_beams(valid_eval, ds, items_of_sid)
        if splits["valid"]["split"] != "valid":
            raise SidrecError(f"{valid_eval}: evaluates split {splits['valid']['split']!r}; λ is picked on 'valid'")
        if splits["test"]["split"] == "valid":
            raise SidrecError(f"{eval_dir}: evaluates split 'valid', the split λ is picked on; re-rank a test folder")
        models = {k: Path(str(b["results"].get("model"))).resolve() for k, b in splits.items()}
        if models["valid"] != models["test"]:
            raise SidrecError(f"{valid_eval}: evaluates model {models['valid']}, but {eval_dir} evaluates "
                              f"{models['test']}; λ must be picked with the same model")
    for b in splits.values():
        b["logits"] = beam_logits(scorer, b["histories"], b["first"], b["users"])

    table = None
    if auto:
        v = splits["valid"]
        weight, table = pick_weight(v["scores"], v["logits"], v["beam_items"], v["targets"], grid, metric, group)
    rerank_info = {"weight": weight, "picked_on": None if table is None else {
        "split": "valid", "eval": str(valid_eval), "metric": metric,
        "grid": [{"weight": w, **m} for w, m in table.items()]},
        "group": group, "scorer": scorer_info, "model_eval": str(eval_dir), "valid_eval": None if valid_eval is None
        else str(valid_eval), "formula": "beam log-likelihood + weight * z(SASRec logit within the row's beams)"}

    out = Path(out)
    report = {"weight": weight, "metric": metric, "scorer": scorer_info, "splits": {}}
    written = {}
    for name in ("valid", "test"):
        if name not in splits:
            continue
        b = splits[name]
        order = fuse(b["scores"], b["logits"], weight, group)
        fused = np.take_along_axis(fused_scores(b["scores"], b["logits"], weight, group), order, 1)
        items = ranked_items(order, b["beam_items"])
        extras = []
        for r, row in enumerate(b["rows"]):
            k = len(row["predicted_sids"])
            beams = [int(j) for j in order[r] if j < k]
            extras.append({"target_sid": row.get("target_sid"),
                           "predicted_sids": [row["predicted_sids"][j] for j in beams],
                           "scores": [row["scores"][j] for j in beams],
                           "fused_scores": [round(float(x), 4) for x in fused[r, :k]]})
        base_ranks = target_ranks([row["predictions"] for row in b["rows"]], b["targets"])
        new_ranks = target_ranks(items, b["targets"])
        report["splits"][name] = {"eval": b["dir"], "split": b["split"], "num_rows": len(b["rows"]),
                                  "groups": group_gains(base_ranks, new_ranks, row_groups(ds, b["split"],
                                                                                          len(b["rows"])), ks)}
        folder = out if name == "test" else out / "valid"
        info = {k: v for k, v in b["results"].items() if k not in ("split", "num_samples", "metrics",
                                                                    "metrics_sid_match")}
        info.update({"rerank": rerank_info, "model_metrics": hr_ndcg(base_ranks)})
        written[name] = (folder, b, items, extras, info)
    for name in ("valid", "test"):  # test last: its manifest.json, written last, marks the whole folder finished
        if name in written:
            folder, b, items, extras, info = written[name]
            if name == "test":
                report["seconds"] = round(time.time() - t0, 2)
                out.mkdir(parents=True, exist_ok=True)
                (out / "manifest.json").unlink(missing_ok=True)
                write_json(out / "gains.json", report)
            write_evaluation(folder, b["split"], b["targets"], items, users=b["users"].tolist(), row_extras=extras,
                             sid_of_item=sid_strings, num_items=ds.num_items, info=info,
                             config={"rerank": {k: v for k, v in rerank_info.items() if k != "picked_on"},
                                     "split": b["split"]}, seconds=time.time() - t0)
    return report


def format_gains(report: dict) -> list[str]:
    """The gains report as a small text table: one line per split and row group."""
    m = report["metric"]
    k = m.split("@")[1]
    lines = [f"re-ranked with λ = {report['weight']:g} ({', '.join(report['scorer']['paths'])})",
             *([] if report["scorer"]["dataset_checked"] else
               ["note: a scorer run records no dataset fingerprint (trained before it was recorded); only its item "
                "count was checked"]),
             f"{'split':<6} {'rows group':<28} {'rows':>6}  {'HR@' + k:>15}  {'NDCG@' + k:>15}  {'gain [95% CI]':>24}"]
    for split, s in report["splits"].items():
        for name, g in s["groups"].items():
            a, b = g["model"], g["reranked"]
            gain = "n/a" if g["gain"] is None else (f"{g['gain']:+.1%} [{g['gain_ci95'][0]:+.1%}, "
                                                    f"{g['gain_ci95'][1]:+.1%}]")
            lines.append(f"{split:<6} {name:<28} {g['rows']:>6}  {a['HR@' + k]:.4f}->{b['HR@' + k]:.4f}  "
                         f"{a['NDCG@' + k]:.4f}->{b['NDCG@' + k]:.4f}  {gain:>24}")
    return lines
