"""The hybrid-ranking stage: a generative evaluation folder + a collaborative scorer (SASRec runs) -> a re-ranked
evaluation folder written by the same harness, with `gains.json` (valid and test, overall and per row group).

The re-ranking itself is `sidrec.evaluate.fusion` (pure functions); this module reads the folders, loads and checks
the scorer, picks λ on valid and writes the results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from sidrec.errors import SidrecError
from sidrec.evaluate.fusion import (COLD, GRID, METRIC, PRIOR_GRID, TRANSITION_GRID, beam_logits, check_weight,
                                    cold_rows, fuse, fused_scores, group_gains, last_items, pick_weights,
                                    ranked_items, recency_prior, row_groups, transition_counts, transition_prior)


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
    from sidrec.evaluate.harness import check_alignment, load_eval

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


def rerank_eval(eval_dir: str | Path, data_dir: str | Path, scorer_paths: Sequence[str | Path], out: str | Path,
                weight: float | str = "auto", valid_eval: str | Path | None = None, sids: str | Path | None = None,
                grid: Sequence[float] = GRID, metric: str = METRIC, group: int | None = None, cold: bool = False,
                prior_grid: Sequence[float] = PRIOR_GRID, transition_grid: Sequence[float] = TRANSITION_GRID) -> dict:
    """Re-rank the beams of a generative evaluation folder with a SASRec scorer and write the re-ranked folder to
    `out` through the harness (results.json, predictions.jsonl, manifest.json), the re-ranked valid folder to
    `out/valid` when `valid_eval` is given, and `out/gains.json`. `weight`: λ >= 0, or "auto" to pick it on
    `valid_eval` (a `sidrec eval --split valid` folder of the same model). `cold`: cold rows (`fusion.cold_rows`) and
    the others each get their own (λ, μ of the recency prior) picked on valid from `grid` x `prior_grid` (needs
    "auto"); `weight` then reports the others' λ. With "auto", the transition prior's τ is picked with them from
    `transition_grid` ([0] leaves it out; a fixed λ uses none). Returns the gains report."""
    import time

    from sidrec.evaluate.harness import load_eval
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
    if cold and not auto:
        raise SidrecError("cold re-ranking picks λ and μ on valid for cold rows and the others: use weight auto")
    prior_grid = [check_weight(m) for m in prior_grid]
    transition_grid = [check_weight(t) for t in transition_grid]
    if not prior_grid or not transition_grid:
        raise SidrecError("the re-rank weight grid is empty")
    use_transition = auto and any(t > 0 for t in transition_grid)
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
        b["weight"], b["priors"] = weight, {}  # priors: name -> [(n, B) prior, its weight: one, or one per row]
        if cold:
            b["cold"] = cold_rows(ds, b["split"], len(b["rows"]))
            prior = recency_prior(ds, b["split"])
            b["priors"]["recency"] = [np.where(b["first"] >= 0, prior[np.maximum(b["first"], 0)], 0.0), 0.0]
        if use_transition:
            b["priors"]["transition"] = [transition_prior(transition_counts(ds, b["split"]), last_items(b["histories"]),
                                                          b["first"]), 0.0]
    prior_grids = {"recency": prior_grid, "transition": transition_grid}
    weight_keys = {"recency": "prior_weight", "transition": "transition_weight"}

    def pick(idx: np.ndarray) -> tuple[tuple[float, ...], dict]:
        v = splits["valid"]
        return pick_weights(v["scores"][idx], v["logits"][idx], [v["beam_items"][i] for i in idx],
                            [v["targets"][i] for i in idx], grid, metric, group,
                            [(p[idx], prior_grids[name]) for name, (p, _) in v["priors"].items()])

    table, cold_info, picked = None, None, {}
    if cold:
        cold_info = {"rows": COLD, "prior": "log(1 + count of the beam's item among the last labelled interactions "
                     "before the split)", "window": len(ds.splits["valid"])}
        v = splits["valid"]
        for part, rows in (("cold", v["cold"]), ("others", ~v["cold"])):
            idx = np.flatnonzero(rows) if rows.any() else np.arange(len(rows))  # no valid rows: picked on all
            point, t = pick(idx)
            cold_info[part] = {"weight": point[0], **{weight_keys[n]: w for n, w in zip(v["priors"], point[1:])},
                               "valid_rows": int(rows.sum()), f"valid_{metric}": t[point][metric]}
        weight = cold_info["others"]["weight"]
        for b in splits.values():
            b["weight"] = np.where(b["cold"], cold_info["cold"]["weight"], weight)
            for name, entry in b["priors"].items():
                entry[1] = np.where(b["cold"], cold_info["cold"][weight_keys[name]],
                                    cold_info["others"][weight_keys[name]])
    elif auto:
        point, table = pick(np.arange(len(splits["valid"]["rows"])))
        weight, picked = point[0], {weight_keys[n]: w for n, w in zip(splits["valid"]["priors"], point[1:])}
        for b in splits.values():
            b["weight"] = weight
            for name, entry in b["priors"].items():
                entry[1] = picked[weight_keys[name]]
    transition_info = None if not use_transition else {
        "prior": "log(1 + count of (the row's last history item -> the beam's item) among the labelled rows before "
                 "the split)", "grid": transition_grid,
        **({"weight": picked["transition_weight"]} if not cold else {})}
    names = list(splits["valid"]["priors"]) if "valid" in splits else []
    rerank_info = {"weight": weight, "picked_on": None if table is None and cold_info is None else {
        "split": "valid", "eval": str(valid_eval), "metric": metric,
        "grid": [] if table is None else [{"weight": k[0], **{weight_keys[n]: w for n, w in zip(names, k[1:])}, **m}
                                          for k, m in table.items()]},
        "group": group, "scorer": scorer_info, "model_eval": str(eval_dir), "valid_eval": None if valid_eval is None
        else str(valid_eval), "formula": "beam log-likelihood + weight * z(SASRec logit within the row's beams)"
        + ("; cold rows and the others: their own weight, + prior_weight * recency prior" if cold else "")
        + (" + transition_weight * transition prior" if use_transition else ""),
        "cold": cold_info, "transition": transition_info}

    out = Path(out)
    report = {"weight": weight, "metric": metric, "scorer": scorer_info, "cold": cold_info,
              "transition": transition_info, "splits": {}}
    written = {}
    for name in ("valid", "test"):
        if name not in splits:
            continue
        b = splits[name]
        mix = (b["weight"], group, [tuple(entry) for entry in b["priors"].values()])
        order = fuse(b["scores"], b["logits"], *mix)
        fused = np.take_along_axis(fused_scores(b["scores"], b["logits"], *mix), order, 1)
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
    tau = report.get("transition") or {}
    cold = report.get("cold") or {}
    taus = {part: f", transition prior τ = {cold[part]['transition_weight']:g}" if tau and cold else ""
            for part in ("cold", "others")}
    lines = [f"re-ranked with λ = {report['weight']:g}"
             + (f", transition prior τ = {tau['weight']:g}" if "weight" in tau else "")
             + f" ({', '.join(report['scorer']['paths'])})",
             *([] if report["scorer"]["dataset_checked"] else
               ["note: a scorer run records no dataset fingerprint (trained before it was recorded); only its item "
                "count was checked"]),
             *([] if not report.get("cold") else
               [f"cold rows ({cold['rows']}): λ = {cold['cold']['weight']:g}, recency prior μ = "
                f"{cold['cold']['prior_weight']:g}{taus['cold']}; the others: λ = {cold['others']['weight']:g}, "
                f"μ = {cold['others']['prior_weight']:g}{taus['others']}"]),
             f"{'split':<6} {'rows group':<40} {'rows':>6}  {'HR@' + k:>15}  {'NDCG@' + k:>15}  {'gain [95% CI]':>24}"]
    for split, s in report["splits"].items():
        for name, g in s["groups"].items():
            a, b = g["model"], g["reranked"]
            gain = "n/a" if g["gain"] is None else (f"{g['gain']:+.1%} [{g['gain_ci95'][0]:+.1%}, "
                                                    f"{g['gain_ci95'][1]:+.1%}]")
            lines.append(f"{split:<6} {name:<40} {g['rows']:>6}  {a['HR@' + k]:.4f}->{b['HR@' + k]:.4f}  "
                         f"{a['NDCG@' + k]:.4f}->{b['NDCG@' + k]:.4f}  {gain:>24}")
    return lines


def resolve_rerank(rerank: str | Path | Sequence[str | Path], weight: float | None = None) -> dict:
    """What a serving layer re-ranks with: {"paths", "weight", "transition_weight", "group", "source"}. `rerank` is a
    re-ranked evaluation folder (`sidrec rerank --out`, RUN/rerank: its results.json records the scorer runs, λ and the
    transition prior's τ; `weight` overrides its λ), or SASRec run folder(s), which need `weight` (τ 0). A folder
    re-ranked with `cold` records the others' λ and τ: serving applies them to every row, without the recency prior
    (a request says neither whether its user is cold nor when it is)."""
    from sidrec.io import read_json

    folders = [Path(rerank)] if isinstance(rerank, (str, Path)) else [Path(p) for p in rerank]
    if not folders:
        raise SidrecError("re-ranking needs a rerank folder or at least one SASRec run folder")
    results = folders[0] / "results.json"
    recorded = (read_json(results) if results.is_file() else {}).get("rerank")
    if recorded is not None and len(folders) == 1:
        paths = [Path(p) for p in recorded["scorer"]["paths"]]
        for p in paths:
            if not p.exists():
                raise SidrecError(f"{results}: the scorer run {p} it records does not exist here; give the scorer "
                                  f"run folder(s) and λ instead (--rerank-scorer DIR --rerank-weight λ)")
        tau = recorded.get("transition") or {}
        tau = tau.get("weight", ((recorded.get("cold") or {}).get("others") or {}).get("transition_weight", 0.0))
        return {"paths": paths, "weight": check_weight(recorded["weight"] if weight is None else weight),
                "transition_weight": check_weight(tau or 0.0), "group": recorded.get("group"),
                "source": str(folders[0])}
    if weight is None:
        raise SidrecError(f"{folders[0]}: not a rerank folder (its results.json records no λ); give the weight λ "
                          f"with the scorer run folder(s) (--rerank-weight), or the rerank folder of `sidrec rerank` "
                          f"or a pipeline run's RUN/rerank")
    return {"paths": folders, "weight": check_weight(weight), "transition_weight": 0.0, "group": None, "source": None}
