"""`assign_sids`: SIDs for new items from an existing build's fitted codebooks, without refitting.

The build folder is read, never written: the result is a new, complete SID folder (index.json with every old entry
byte for byte and the new items after them, quality.json, a copy of the fitted state so it can be assigned to
again, and a manifest that records the parent build's manifest and this step's inputs). Models trained on the old
folder stay bound to SIDs that still exist unchanged.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from sidrec.errors import SidrecError
from sidrec.io import atomic_path, read_json, read_manifest, write_json, write_manifest
from sidrec.sid.base import check_embeddings, sid_quality
from sidrec.sid.build import QUALITY_FILE, embedding_record, load_estimator, load_npy, thread_limit
from sidrec.sid.io import INDEX_FILE, load_sids, sid_tokens


def _check_embedding_model(sids: Path, parent: dict, emb_file: Path) -> dict | None:
    """The build's embedding record; a SidrecError if `emb_file`'s sidecar names another model or space."""
    built = parent.get("embedding")
    if built is None:  # a build from before the record: the sidecar of its embedding file, if still there
        path = parent.get("inputs", {}).get("embeddings", {}).get("path")
        built = embedding_record(Path(path)) if path and Path(path).exists() else None
    if built is None:
        return None
    new = embedding_record(emb_file)
    if new is None:
        raise SidrecError(f"{emb_file}: no .json sidecar says which model made these embeddings, but {sids} was built "
                          f"on '{built['model']}' embeddings; embed the new items with `sidrec embed`")
    diff = [k for k in ("model", "revision", "normalize") if new.get(k) != built.get(k)]
    if diff:
        k = diff[0]
        raise SidrecError(f"{emb_file}: embeddings made with {k}={new.get(k)!r} but {sids} was built on {k}="
                          f"{built.get(k)!r}; embed the new items with the build's model settings")
    return built


def _read_item_ids(items) -> list[int]:
    if not isinstance(items, (str, Path)):
        return [int(i) for i in items]
    path = Path(items)
    if not path.exists():
        raise SidrecError(f"{path}: item id file does not exist")
    ids = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                ids.append(int(line))
            except ValueError:
                raise SidrecError(f"{path}:{n}: expected one integer item id per line, got {line.strip()!r}") from None
    return ids


def _new_item_ids(X: np.ndarray, n_old: int, emb_file: Path, data, items) -> tuple[np.ndarray, np.ndarray]:
    """The new items' embeddings sorted by item id; their ids must continue the index densely (n_old, n_old+1, ...)."""
    if data is not None and items is not None:
        raise SidrecError("give the new items either as a dataset (--data) or as an id file (--items), not both")
    if data is not None:
        from sidrec.embed.encoder import load_items

        n_data = len(load_items(data))
        where = data if isinstance(data, (str, Path)) else "the dataset"
        if n_data <= n_old:
            raise SidrecError(f"{where} has {n_data} items and the index already {n_old}: no new items to assign")
        if len(X) == n_data:  # the whole grown catalogue was embedded: its new rows
            X = X[n_old:]
        elif len(X) != n_data - n_old:
            raise SidrecError(f"{emb_file} has {len(X)} rows; {where} has {n_data} items, {n_data - n_old} of them "
                              f"new: embed either all items or only the new ones")
        return X, np.arange(n_old, n_data)
    if items is None:
        return X, np.arange(n_old, n_old + len(X))
    ids = np.asarray(_read_item_ids(items), dtype=np.int64)
    src = items if isinstance(items, (str, Path)) else "item ids"
    if len(ids) == 0:
        raise SidrecError(f"{src}: no item ids; nothing to assign")
    if len(ids) != len(X):
        raise SidrecError(f"{src} lists {len(ids)} item ids but {emb_file} has {len(X)} rows (row i is the i-th id)")
    old = ids[(ids >= 0) & (ids < n_old)]
    if len(old):
        raise SidrecError(f"{src}: item id {old[0]} is already in the index (items 0..{n_old - 1}); give only new items")
    if sorted(ids.tolist()) != list(range(n_old, n_old + len(ids))):
        raise SidrecError(f"{src}: new item ids must continue the index densely, {n_old}..{n_old + len(ids) - 1} "
                          f"each once; got ids from {ids.min()} to {ids.max()}")
    order = np.argsort(ids)
    return X[order], ids[order]


def assign_sids(sids, emb_file, out_dir, data=None, items=None, threads: int | None = None) -> dict:
    """Give new items SIDs with the fitted state of the build in `sids`; write old + new to `out_dir`.

    Rows of `emb_file` are the new items: item ids n_old, n_old+1, ... in order, or the ids listed in `items` (a
    file, one per line, or a sequence), or the items of dataset `data` beyond the index (`emb_file` may then
    hold the whole grown catalogue). Returns the assignment summary (also in quality.json's `assign`).
    """
    sids, emb_file, out_dir = Path(sids), Path(emb_file), Path(out_dir)
    if out_dir.resolve() == sids.resolve():
        raise SidrecError(f"{out_dir}: --out must be a new folder; {sids} stays as it is so that models trained "
                          f"on its SIDs stay valid")
    est = load_estimator(sids)
    parent = read_manifest(sids)
    old_codes, old_tokens = load_sids(sids)
    n_old = len(old_codes)
    X = load_npy(emb_file)
    if X.ndim == 2 and X.shape[0] == 0:
        raise SidrecError(f"{emb_file}: holds no items; nothing to assign")
    X = check_embeddings(X, what=str(emb_file))
    if X.shape[1] != est.dim_:
        raise SidrecError(f"{emb_file}: {X.shape[1]}-dim embeddings but {sids} was built on {est.dim_}-dim ones; "
                          f"embed the new items with the build's model")
    built = _check_embedding_model(sids, parent, emb_file)
    X, ids = _new_item_ids(X, n_old, emb_file, data, items)

    t0 = time.perf_counter()
    with thread_limit(threads):
        new_codes = est.assign(X, taken=old_codes)
    seconds = time.perf_counter() - t0
    stats = {**est.assign_stats_, "ids": [int(ids[0]), int(ids[-1])]}
    stats["collisions_resolved"] = stats["moved_from_existing"] + stats["moved_from_new"]

    out_dir.mkdir(parents=True, exist_ok=True)
    previous = read_manifest(out_dir) or {}
    (out_dir / "manifest.json").unlink(missing_ok=True)  # an unfinished folder must not look finished
    state = [f for f in parent.get("files", []) if f not in (INDEX_FILE, QUALITY_FILE)]
    for stale in set(previous.get("files", [])) - {INDEX_FILE, QUALITY_FILE, *state}:  # as build_sids does
        (out_dir / Path(stale).name).unlink(missing_ok=True)
    for name in state:
        with atomic_path(out_dir / name) as tmp:
            shutil.copyfile(sids / name, tmp)
    index = {str(i): toks for i, toks in enumerate(old_tokens)}  # the old entries exactly as they were read
    index.update({str(i): sid_tokens(row) for i, row in zip(ids.tolist(), new_codes.tolist())})
    write_json(out_dir / INDEX_FILE, index, indent=None)

    width = old_codes.shape[1]
    pad = np.full((len(new_codes), width - est.levels), -1, dtype=np.int64)
    before = np.vstack([old_codes, np.hstack([est.codes_raw_, pad])])
    after = np.vstack([old_codes, np.hstack([new_codes, pad])])
    parent_q = read_json(sids / QUALITY_FILE) if (sids / QUALITY_FILE).exists() else {}
    quality = {
        "method": est.method, "params": est.params(), "num_items": len(after), "dim": est.dim_,
        "seconds": round(seconds, 3), "collision": est.collision,
        "before": sid_quality(before, est.codebook), "after": sid_quality(after, est.codebook),
        "assign": stats,
        "build": {k: parent_q[k] for k in ("num_items", "seconds", "recon_error_raw", "recon_error") if k in parent_q},
    }
    write_json(out_dir / QUALITY_FILE, quality)
    inputs = {"parent_index": sids / INDEX_FILE, "embeddings": emb_file}
    if isinstance(items, (str, Path)):
        inputs["items"] = Path(items)
    if isinstance(data, (str, Path)):
        inputs["data"] = Path(data)
    write_manifest(out_dir, "sid", config={**parent["config"], "assign": {"threads": threads}}, inputs=inputs,
                   seconds=seconds, extra={"files": [INDEX_FILE, QUALITY_FILE, *state], "embedding": built,
                                           "parent": {"path": str(sids), "manifest": parent}})
    return quality
