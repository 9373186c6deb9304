"""Atomic writes, hashing and manifests.

Every artifact is written to a temporary file in the same folder and renamed into place, so a killed run never
leaves a half-written file that a later run would take for finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import tempfile
import socket
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

MANIFEST = "manifest.json"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as e:  # e.g. a disk filling up mid-write: name the artifact, not an anonymous stream
        if e.filename is None:
            e.filename = str(path)
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def write_jsonl(path: str | os.PathLike, rows) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def array_fingerprint(array) -> str:
    """sha256 of an integer array's shape and values (as int64, row-major): the same codes give the same hash
    whatever file or dtype they came from."""
    import numpy as np

    a = np.ascontiguousarray(np.asarray(array, dtype=np.int64))
    return hashlib.sha256(f"{a.shape}".encode() + a.tobytes()).hexdigest()


def folder_fingerprint(folder: str | os.PathLike, pattern: str = "*.parquet") -> str:
    """sha256 over the names and sha256s of the files in `folder` matching `pattern` (a dataset's content)."""
    files = sorted(Path(folder).glob(pattern))
    return hashlib.sha256("".join(f"{p.name}:{file_sha256(p)}\n" for p in files).encode()).hexdigest()


def config_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_manifest(
    folder: str | os.PathLike,
    stage: str,
    config: Any = None,
    inputs: dict[str, str | os.PathLike] | None = None,
    seconds: float | None = None,
    extra: dict | None = None,
) -> dict:
    """Record what produced `folder`: the stage, its config and hash, input file hashes, time taken.

    Written last, so its presence means every other file of the stage is complete.
    """
    from sidrec import __version__

    inputs_info = {}
    for name, p in (inputs or {}).items():
        p = Path(p)
        if p.is_file():
            inputs_info[name] = {"path": str(p), "sha256": file_sha256(p)}
        else:
            inputs_info[name] = {"path": str(p)}
    manifest = {
        "stage": stage,
        "status": "done",
        "sidrec_version": __version__,
        "config": config,
        "config_hash": config_hash(config),
        "inputs": inputs_info,
        "seconds": None if seconds is None else round(seconds, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        **(extra or {}),
    }
    write_json(Path(folder) / MANIFEST, manifest)
    return manifest


def read_json(path: str | os.PathLike, hint: str = "") -> Any:
    """Parse a JSON file; a malformed one raises a SidrecError naming the file, line and what is wrong."""
    from sidrec.errors import SidrecError

    path = Path(path)
    try:
        with reading(path, hint):
            text = path.read_text(encoding="utf-8")
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SidrecError(f"{path}:{e.lineno}: not valid JSON ({e.msg})" + (f"; {hint}" if hint else "")) from None


@contextlib.contextmanager
def reading(path: str | os.PathLike, hint: str = "") -> Iterator[None]:
    """Turn what a bad file raises inside the block (OSError, undecodable text, a parser's error, numpy's EOFError)
    into a one-line SidrecError naming `path` (and `hint`, what to do); anything else propagates unchanged."""
    from sidrec.errors import SidrecError, file_problem

    try:
        yield
    except SidrecError:
        raise
    except Exception as e:  # noqa: BLE001 - file_problem decides; the rest is re-raised
        msg = file_problem(e, path)
        if msg is None:
            raise
        raise SidrecError(msg + (f"; {hint}" if hint else "")) from None


def check_file(path: str | os.PathLike, hint: str = "") -> Path:
    """`path`, if it is a file that can be opened for reading; else a SidrecError saying why (missing, a folder, a
    symlink loop, no permission)."""
    from sidrec.errors import SidrecError

    path = Path(path)
    if not os.path.lexists(path):
        raise SidrecError(f"{path}: file does not exist" + (f"; {hint}" if hint else ""))
    with reading(path, hint), open(path, "rb"):
        pass
    return path


def check_folder(path: str | os.PathLike, what: str = "folder", hint: str = "") -> Path:
    """`path`, if it is a folder; else a SidrecError saying why (missing, a file, a symlink loop, no permission)."""
    from sidrec.errors import SidrecError

    path = Path(path)
    tail = f"; {hint}" if hint else ""
    if not os.path.lexists(path):
        raise SidrecError(f"{path}: {what} does not exist{tail}")
    with reading(path, hint):
        os.stat(path)
    if not path.is_dir():
        raise SidrecError(f"{path}: is a file where a {what} is expected{tail}")
    return path


def read_npy(path: str | os.PathLike, mmap_mode: str | None = None, hint: str = ""):
    """A .npy array (no pickles); an empty, truncated or foreign file is a SidrecError naming it."""
    import numpy as np

    from sidrec.errors import REMAKE, SidrecError

    path = Path(path)
    with reading(path, hint):
        try:
            return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
        except (ValueError, EOFError) as e:  # numpy: "No data left in file", bad magic string, pickled object arrays
            raise SidrecError(f"{path}: not a readable .npy array ({str(e).splitlines()[0][:200]}); {REMAKE}"
                              + (f"; {hint}" if hint else "")) from None


def read_parquet(path: str | os.PathLike, hint: str = ""):
    """A pyarrow Table; a missing, empty, truncated or foreign file is a SidrecError naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sidrec.errors import REMAKE, SidrecError

    path = Path(path)
    with reading(path, hint):
        try:
            return pq.read_table(path)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, ValueError) as e:
            raise SidrecError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0][:200]}); {REMAKE}"
                              + (f"; {hint}" if hint else "")) from None


def read_manifest(folder: str | os.PathLike) -> dict | None:
    p = Path(folder) / MANIFEST
    if not p.exists():
        return None
    return read_json(p)


def url_reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the URL's host opens within `timeout`: a fast offline check before a library
    would spend a minute on retries."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now (psutil, else /proc/meminfo); None if unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
