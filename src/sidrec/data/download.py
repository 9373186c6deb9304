"""Resumable, verified HTTP download with a progress bar.

`dest` only ever appears once complete: bytes go to `dest.part`, which is renamed into place after its size matches
the server's Content-Length (and its sha256, when one is given). A `.part` left by an interrupted run is resumed with
an HTTP Range request; a server that ignores the Range gets a fresh download.

Checksums: with `sha256` the file must match it, on download and on every reuse. Without one (the Amazon-2018 mirror
publishes no checksums, and none were found in public code that fetches its files), the sha256 of the first download
is recorded beside the file in `dest.sha256` (`sha256sum -c` format) and every later reuse is checked against it: trust
on first use, which catches a cache file that changed or was truncated later, not a mirror that served a wrong file the
first time. The dataset's manifest.json records the same sha256 under `inputs`, so two builds can be compared.
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from sidrec.errors import SidrecError
from sidrec.io import file_sha256, write_text

CHUNK = 1 << 20


def download(url: str, dest: str | Path, sha256: str | None = None, progress: bool = True,
             timeout: float = 60.0) -> Path:
    """Fetch `url` to `dest` unless `dest` already exists (a cache hit, checked against `sha256` or, without it, the
    sha256 recorded at the first download)."""
    dest = Path(dest)
    if dest.exists():
        expected = sha256 or recorded_sha256(dest)
        if expected:
            _check_sha256(dest, expected, url)
        else:  # fetched before sha256s were recorded: trust it from now on
            _record_sha256(dest, file_sha256(dest))
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "sidrec", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the .part is already as long as the file (or longer): start over
            part.unlink()
            return download(url, dest, sha256, progress, timeout)
        raise SidrecError(f"{url}: HTTP {e.code} {e.reason}; check the URL (category name, base URL) or pass a local "
                          f"file instead") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise SidrecError(f"{url}: cannot download ({reason}); check the network or pass a local file") from None

    with resp:
        if have and resp.status != 206:  # the server ignored the Range
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   TimeRemainingColumn())
        with open(part, "ab" if have else "wb") as f, Progress(*columns, disable=not progress) as bar:
            task = bar.add_task(dest.name, total=total, completed=have)
            try:
                while chunk := resp.read(CHUNK):
                    f.write(chunk)
                    bar.advance(task, len(chunk))
            except (OSError, http.client.HTTPException) as e:
                raise SidrecError(f"{url}: download interrupted after {f.tell()} bytes ({type(e).__name__}); run "
                                  f"the same command again to resume from {part}") from None

    size = part.stat().st_size
    if total is not None and size != total:
        if size > total:  # cannot be resumed into the right file
            part.unlink()
        raise SidrecError(f"{url}: size mismatch: received {size} bytes but the server announced {total}; run the same "
                          f"command again to resume" + (" (the oversized .part was deleted)" if size > total else ""))
    got = _check_sha256(part, sha256, url) if sha256 else file_sha256(part)
    os.replace(part, dest)
    _record_sha256(dest, got)
    return dest


def sha256_record(dest: str | Path) -> Path:
    dest = Path(dest)
    return dest.with_name(dest.name + ".sha256")


def recorded_sha256(dest: str | Path) -> str | None:
    """The sha256 recorded when `dest` was first downloaded, or None."""
    record = sha256_record(dest)
    if not record.is_file():
        return None
    fields = record.read_text(encoding="utf-8").split()
    return fields[0].lower() if fields else None


def _record_sha256(dest: Path, digest: str) -> None:
    write_text(sha256_record(dest), f"{digest}  {dest.name}\n")


def _check_sha256(path: Path, expected: str, url: str) -> str:
    got = file_sha256(path)
    if got != expected.lower():
        path.unlink()
        dest = path.with_name(path.name.removesuffix(".part"))
        sha256_record(dest).unlink(missing_ok=True)
        raise SidrecError(f"{path}: sha256 {got} does not match the expected {expected} for {url}; the file was "
                          f"deleted, run again to download it afresh")
    return got
