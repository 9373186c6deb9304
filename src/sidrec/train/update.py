"""`sidrec update`: continue a trained model on a later slice of data instead of retraining it from scratch.

Inputs: the model folder (`sidrec sft`/`update`/`rl` OUT/model, whose run manifest records the SIDs, data and
settings it was trained with), the slice (a dataset whose training rows all come after the model's, and whose
catalogue extends the model's: `sidrec data split-time`) and SIDs for the grown catalogue (`sidrec sid assign` from
the model's SIDs, so every old item keeps its SID).

Training is `run_sft` from the model's weights, on: the slice's seqrec rows, the alignment tasks (title2sid,
sid2title) of the new items only, and a seeded `replay_fraction` of the examples the model was trained on (so old
items are not forgotten). A SID token is added (with a new embedding row) only for a code no old SID used; every old
token keeps its id. Every check runs before training and fails in one line.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from sidrec.config import describe_error
from sidrec.data.canonical import Dataset
from sidrec.errors import SidrecError
from sidrec.io import file_sha256, read_manifest
from sidrec.sid.io import INDEX_FILE, load_sids, sid_tokens
from sidrec.tasks.builders import SEQ_TASKS, check_sid_coverage
from sidrec.tasks.template import level_tokens
from sidrec.train.config import SftConfig, UpdateConfig

TRAINED_STAGES = ("sft", "update", "rl")


@dataclass
class Trained:
    """What a model folder was trained on, read from its run's manifest (the folder above it)."""

    model: Path
    sft: dict  # the SftConfig it was (last) trained with
    sids: Path  # the SID folder or index.json
    sids_sha256: str | None  # of that index.json when the model was trained
    data: list[Path]  # every dataset whose training rows it has seen, oldest first
    end_timestamp: int | None  # the last training target's time (None: no timestamps)


def _index_file(sids: Path) -> Path:
    return sids / INDEX_FILE if sids.is_dir() else sids


def trained_record(model_dir: str | Path) -> Trained:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise SidrecError(f"{model_dir}: model folder does not exist")
    if (read_manifest(model_dir) or {}).get("stage") in TRAINED_STAGES:
        raise SidrecError(f"{model_dir}: a run folder; pass its model folder, {model_dir / 'model'}")
    m = read_manifest(model_dir.parent)
    if m is None or m.get("stage") not in TRAINED_STAGES:
        raise SidrecError(f"{model_dir}: no {' / '.join(TRAINED_STAGES)} manifest.json beside it (in "
                          f"{model_dir.parent}) records what it was trained on; update a model folder written by "
                          f"`sidrec sft`, `sidrec update` or `sidrec rl`")
    inputs = {k: Path(v["path"]) for k, v in m.get("inputs", {}).items() if isinstance(v, dict) and "path" in v}
    need = ("model", "data", "sids") if m["stage"] == "rl" else ("data", "sids")
    if not set(need) <= set(inputs) or not isinstance(m.get("config"), dict):
        raise SidrecError(f"{model_dir.parent / 'manifest.json'}: no config or inputs {', '.join(need)} recorded; "
                          f"re-run the stage that wrote it")
    if m["stage"] == "rl":  # RL keeps the data and SIDs of the SFT model it started from
        return replace(trained_record(inputs["model"]), model=model_dir)
    sids, data = inputs["sids"], inputs["data"]
    sha = m.get("sids_sha256")
    if sha is None and _index_file(sids).is_file():  # a run from before the record: the index as it is now
        sha = file_sha256(_index_file(sids))
    if "train_period" in m:
        end = m["train_period"]["end_timestamp"]
    else:  # a run from before the record: its dataset, if still there
        ts = Dataset.load(data).splits["train"]["timestamp"] if data.is_dir() else None
        end = int(ts.max()) if ts is not None and ts.notna().all() else None
    return Trained(model_dir, m["config"], sids, sha, [Path(p) for p in m.get("trained_data", [data])], end)


def check_sid_lineage(trained: Trained, sids: Path) -> None:
    """`sids` must be the SID index the model was trained with or one `sidrec sid assign` made from it, directly or
    through a chain of assigns: compared by the sha256 of index.json recorded at training and in each assign's
    manifest (`inputs.parent_index`, `parent.manifest`). The one place a model is checked against SIDs here."""
    if trained.sids_sha256 is None:
        raise SidrecError(f"{trained.model} records no fingerprint of its SIDs and {trained.sids} is gone; cannot "
                          f"check that {sids} extends them")
    if file_sha256(_index_file(sids)) == trained.sids_sha256:
        return
    manifest = read_manifest(sids if sids.is_dir() else sids.parent)
    while manifest:
        if manifest.get("inputs", {}).get("parent_index", {}).get("sha256") == trained.sids_sha256:
            return
        manifest = (manifest.get("parent") or {}).get("manifest")
    raise SidrecError(f"{sids}: neither the SIDs {trained.model} was trained with ({trained.sids}) nor assigned from "
                      f"them; give new items SIDs with `sidrec sid assign {trained.sids} ...`")


def check_old_entries(trained: Trained, codes: np.ndarray, sids: Path) -> np.ndarray:
    """The model's SIDs (returned) must be the first entries of `codes`, unchanged."""
    index = _index_file(trained.sids)
    if not index.is_file() or file_sha256(index) != trained.sids_sha256:
        raise SidrecError(f"{index}: the SIDs {trained.model} was trained with are "
                          f"{'gone' if not index.is_file() else 'changed since'}; cannot check that {sids} keeps them")
    old, _ = load_sids(index)
    if len(codes) < len(old):
        raise SidrecError(f"{sids}: {len(codes)} items, fewer than the {len(old)} the model was trained with")
    width = max(old.shape[1], codes.shape[1])
    pad = lambda c: np.pad(c, ((0, 0), (0, width - c.shape[1])), constant_values=-1)  # noqa: E731
    changed = np.flatnonzero((pad(codes[:len(old)]) != pad(old)).any(axis=1))
    if len(changed):
        i = int(changed[0])
        raise SidrecError(f"{sids}: item {i}'s SID {''.join(sid_tokens(codes[i]))} differs from "
                          f"{''.join(sid_tokens(old[i]))}, the one the model was trained with ({len(changed)} items "
                          f"changed); old SIDs must stay as they are: use `sidrec sid assign`")
    return old


def check_catalogue(old: Dataset, where: Path, new: Dataset, data_dir: Path) -> None:
    """The items of a dataset the model was trained on must be the first items of the slice, in order."""
    n = old.num_items
    if n > new.num_items or old.titles() != new.titles()[:n]:
        raise SidrecError(f"{data_dir}: its first {n} items are not the items of {where}, which the model was trained "
                          f"on (ids must keep their items); make the slice with `sidrec data split-time`")


def check_after_training(trained: Trained, old_data: list[Dataset], new: Dataset, data_dir: Path) -> None:
    """Every training row of the slice must come after the model's training period: by target time when both have
    timestamps, else no row may be one the model was trained on (user, history, target)."""
    ts = new.splits["train"]["timestamp"]
    if trained.end_timestamp is not None and ts.notna().all():
        early = np.flatnonzero(ts.to_numpy(dtype=np.int64) <= trained.end_timestamp)
        if len(early):
            r = int(early[0])
            raise SidrecError(f"{data_dir / 'train.parquet'}: row {r}: target time {int(ts.iloc[r])} is not after the "
                              f"end of {trained.model}'s training period ({trained.end_timestamp}); {len(early)} rows "
                              f"overlap it: update on later rows only (`sidrec data split-time`)")
        return
    seen = {(u, tuple(h), t) for ds in old_data
            for u, h, t in zip(*(ds.splits["train"][c].tolist() for c in ("user", "history", "target")))}
    df = new.splits["train"]
    for r, key in enumerate(zip(df["user"].tolist(), map(tuple, df["history"].tolist()), df["target"].tolist())):
        if key in seen:
            raise SidrecError(f"{data_dir / 'train.parquet'}: row {r} is a row {trained.model} was trained on; the "
                              f"update slice must hold only later rows (`sidrec data split-time`)")


def effective_config(cfg: UpdateConfig, trained: Trained) -> SftConfig:
    """The model's SFT settings with the update's in place, starting from the model's weights."""
    keys = ("epochs", "warmup_ratio", "early_stopping_patience", "eval_steps", "threads", "seed")
    over = {k: getattr(cfg, k) for k in keys}
    over.update({k: getattr(cfg, k) for k in ("tasks", "batch_size", "micro_batch_size", "learning_rate")
                 if getattr(cfg, k) is not None})
    try:
        return SftConfig.model_validate({**trained.sft, **over, "base_model": str(trained.model)})
    except ValidationError as e:
        raise SidrecError(describe_error(e, "update (with the model's SFT settings): ")) from None


def update_examples(sft: SftConfig, new: Dataset, codes: np.ndarray, n_old: int, old_data: list[Dataset],
                    replay_fraction: float) -> tuple[list[dict], list[dict]]:
    """(the slice's examples: its rows and the new items' alignment; a seeded replay sample of the old examples)."""
    from sidrec.train.sft import train_examples

    fresh = [e for e in train_examples(sft, new, codes) if e["task"] in SEQ_TASKS or e["item"] >= n_old]
    rng = np.random.default_rng([sft.seed, 2])
    replay = []
    for ds in old_data:  # two passes over the old examples (count, then keep the picked ones), never all at once
        total = sum(1 for _ in train_examples(sft, ds, codes[:ds.num_items]))
        pick = set(rng.choice(total, size=int(round(replay_fraction * total)), replace=False).tolist())
        replay += [e for i, e in enumerate(train_examples(sft, ds, codes[:ds.num_items])) if i in pick]
    return fresh, replay


def run_update(cfg: UpdateConfig, model_dir: str | Path, data_dir: str | Path, sids: str | Path,
               out: str | Path) -> Path:
    """Continue the model in `model_dir` on the slice `data_dir` with the grown SIDs `sids`; returns OUT/model."""
    from sidrec.train.sft import run_sft

    model_dir, data_dir, sids, out = Path(model_dir), Path(data_dir), Path(sids), Path(out)
    trained = trained_record(model_dir)
    if out.resolve() == model_dir.parent.resolve():
        raise SidrecError(f"{out}: --out must be a new folder, not the run folder of the model being updated")
    new = Dataset.load(data_dir)
    codes, _ = load_sids(sids)
    check_sid_lineage(trained, sids)
    old_codes = check_old_entries(trained, codes, sids)
    check_sid_coverage(new, codes)
    present = [p for p in trained.data if p.is_dir()]
    if len(present) < len(trained.data) and cfg.replay_fraction > 0:
        gone = next(p for p in trained.data if not p.is_dir())
        raise SidrecError(f"{gone}: the data {model_dir} was trained on is gone, so none of it can be replayed; "
                          f"restore it or set update.replay_fraction=0")
    old_data = [Dataset.load(p) for p in present]
    for ds, p in zip(old_data, present):
        check_catalogue(ds, p, new, data_dir)
    check_after_training(trained, old_data, new, data_dir)
    sft = effective_config(cfg, trained)

    fresh, replay = update_examples(sft, new, codes, len(old_codes), old_data, cfg.replay_fraction)
    had = {t for level in level_tokens(old_codes) for t in level}
    added = [t for level in level_tokens(codes) for t in level if t not in had]
    record = {"inputs": {"model": model_dir}, "update": cfg.model_dump(), "parent_model": str(model_dir),
              "trained_data": [str(p) for p in trained.data] + [str(data_dir.resolve())],
              "new_items": len(codes) - len(old_codes), "added_sid_tokens": added,
              "num_new_examples": len(fresh), "num_replay_examples": len(replay)}
    return run_sft(sft, data_dir, sids, out, examples=fresh + replay, stage="update", record=record)
