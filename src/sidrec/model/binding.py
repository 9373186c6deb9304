"""A model folder's binding to the SIDs and dataset it was trained on, and to its own weights.

SFT and RL write `sidrec_binding.json` into the model folder, beside the weights, so it travels with the folder:

    {"sids":    {"path": ..., "fingerprint": sha256 of the codes},
     "data":    {"path": ..., "fingerprint": sha256 of the dataset's parquet files,
                 "items_fingerprint": sha256 of its items table (the catalogue)},
     "weights": {"model.safetensors": {"bytes": ..., "mtime_ns": ..., "sha256": ...}}}

A model decodes whatever SID index it is handed: with another index (or two items' SIDs swapped) every beam is
still a "valid SID" and the metrics are silently wrong; so with another catalogue (item ids that name other items).
`check_binding` refuses such a pairing unless the caller
allows it, and verifies the weights against their recorded size and sha256 (flipped bytes in a weights file load
fine and rank garbage; `verify_weights` says when the hash is skipped). A folder without a record (an older run, a
user's own HF model) gets a one-line warning.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sidrec.errors import SidrecError
from sidrec.io import array_fingerprint, file_sha256, folder_fingerprint, read_json, write_json

BINDING = "sidrec_binding.json"
ITEMS = "items.parquet"  # the catalogue: item ids mean the same items only where it is the same
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
OVERRIDE = "--allow-mismatch (allow_mismatch=True)"
log = logging.getLogger("sidrec.model")  # unconfigured, Python prints a warning as its one-line message on stderr


def catalogue_fingerprint(data_dir: str | os.PathLike) -> str:
    """sha256 of the dataset's items table (ids, titles, text), not of the file's bytes: the parquet metadata differs
    between two writes of the same items."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(data_dir) / ITEMS
    if not path.is_file():
        raise SidrecError(f"{data_dir}: no {ITEMS}; not a sidrec dataset folder")
    table = pq.read_table(path).replace_schema_metadata(None).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def weight_files(folder: str | os.PathLike) -> list[Path]:
    return sorted(p for pattern in WEIGHT_PATTERNS for p in Path(folder).glob(pattern))


def binding_record(folder: str | os.PathLike, codes, sids: str | os.PathLike, data_dir: str | os.PathLike) -> dict:
    return {"sids": {"path": str(Path(sids).resolve()), "fingerprint": array_fingerprint(codes)},
            "data": {"path": str(Path(data_dir).resolve()), "fingerprint": folder_fingerprint(data_dir),
                     "items_fingerprint": catalogue_fingerprint(data_dir)},
            "weights": {p.name: {"bytes": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns, "sha256": file_sha256(p)}
                        for p in weight_files(folder)}}


def write_binding(folder: str | os.PathLike, codes, sids: str | os.PathLike, data_dir: str | os.PathLike) -> dict:
    """Record, atomically, what the weights saved in `folder` were trained on (call after saving them)."""
    record = binding_record(folder, codes, sids, data_dir)
    if not record["weights"]:
        raise SidrecError(f"{folder}: no weights file to bind (save the model before its binding)")
    write_json(Path(folder) / BINDING, record)
    return record


def read_binding(folder: str | os.PathLike) -> dict | None:
    path = Path(folder) / BINDING
    if not path.is_file():
        return None
    record = read_json(path, hint="delete it to load the model unchecked")
    if not isinstance(record, dict) or not all(isinstance(record.get(k), dict) for k in ("sids", "data", "weights")):
        raise SidrecError(f"{path}: expected a binding record with sids, data and weights; delete it to load the model "
                          f"unchecked")
    return record


def verify_weights(folder: str | os.PathLike, record: dict) -> None:
    """Each recorded weights file has its recorded size and sha256.

    sha256 reads the whole file (0.2-1 GB/s here: seconds for a 2 GB model, at every load), so a file whose size and
    modification time are still those recorded is taken as written; any other (copied, rewritten, touched) is hashed.
    Writing flipped bytes into a file, or copying it, changes its mtime; only a change that also restores the
    mtime goes unseen."""
    for name, want in record["weights"].items():
        path = Path(folder) / name
        if not path.is_file():
            raise SidrecError(f"{path}: weights file missing (recorded in {BINDING}); copy the whole model folder")
        stat = path.stat()
        if stat.st_size == want.get("bytes") and stat.st_mtime_ns == want.get("mtime_ns"):
            continue
        if stat.st_size != want.get("bytes") or file_sha256(path) != want.get("sha256"):
            raise SidrecError(f"{path}: weights file is corrupt ({stat.st_size} bytes, sha256 differs from {BINDING}, "
                              f"which recorded {want.get('bytes')} bytes); copy or re-train the model")


def check_binding(folder: str | os.PathLike, codes, sids: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                  allow_mismatch: bool = False) -> dict | None:
    """Refuse SIDs (and a dataset) other than those `folder` was trained with unless `allow_mismatch`; verify the
    weights. Returns the record (None, with a warning, for a folder that has none)."""
    record = read_binding(folder)
    if record is None:
        log.warning(f"warning: {folder} has no {BINDING} (an older run or an outside model): cannot check that it "
                    f"was trained with the SIDs {sids}")
        return None
    verify_weights(folder, record)
    given = {"SIDs": (record["sids"], sids, array_fingerprint(codes), "fingerprint")}
    if data_dir is not None:  # rows may differ (RL on other prompts); the items must be the same
        given["dataset catalogue"] = (record["data"], data_dir, catalogue_fingerprint(data_dir), "items_fingerprint")
    for what, (want, path, fingerprint, key) in given.items():
        if want.get(key) == fingerprint:
            continue
        msg = (f"{folder} was trained with the {what} {want.get('path')} (fingerprint {str(want.get(key))[:12]}), "
               f"not {path} ({fingerprint[:12]})")
        if not allow_mismatch:
            raise SidrecError(f"{msg}; use the ones it was trained with, or pass {OVERRIDE} to use these anyway")
        log.warning(f"warning: {msg}; going on as asked")
    return record


def recorded_sids(folder: str | os.PathLike) -> Path:
    """The SID folder `folder` was trained with, from its binding record (for commands whose --sids is optional)."""
    record = read_binding(folder)
    if record is None:
        raise SidrecError(f"{folder}: no {BINDING} records the SIDs this model was trained with; pass --sids")
    path = Path(record["sids"].get("path", ""))
    if not path.exists():
        raise SidrecError(f"{folder}: trained with the SIDs {path}, which do not exist here; pass --sids")
    return path
