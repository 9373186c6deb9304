"""Checkpoints that a killed or disk-full run always resumes from, for the SFT and RL trainers alike.

HF `Trainer` writes `checkpoint-N/` file by file (weights, optimizer, scheduler, RNG states) and `trainer_state.json`
last, so a run killed or out of disk mid-save leaves a folder without it (or with a truncated one); HF's
`get_last_checkpoint` still picks that folder and every re-run fails. Here `trainer_state.json` is the commit record:
`resume_point` takes the newest checkpoint whose state parses and whose weight/optimizer files are whole, and removes
the unfinished ones (an unfinished checkpoint holds nothing a resume can use, and after a full disk it holds the
space that was just freed).

Why not write each checkpoint into a temporary folder and rename it: `Trainer._save_checkpoint` (private) builds the
folder's path, records the best checkpoint's path in the state and rotates old checkpoints in one go, so staging would
mean re-implementing it; HF itself dropped its staging folders (4.36) for breaking on shared and network filesystems.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import struct
import zipfile
from pathlib import Path

from sidrec.errors import SidrecError

STATE = "trainer_state.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "pytorch_model.bin",
            "adapter_model.bin")


def _say(tag: str, line: str) -> None:
    if int(os.environ.get("RANK", 0)) == 0:  # one line per run, not one per process under accelerate launch
        print(f"[{tag}] {line}", flush=True)


def _safetensors_whole(path: Path) -> bool:
    """True if the file is as long as its header says (a truncated file is shorter)."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        return path.stat().st_size == 8 + n + end
    except (OSError, ValueError, struct.error, AttributeError, KeyError, TypeError, IndexError):
        return False


def incomplete_reason(folder: str | Path) -> str | None:
    """Why `folder` (a `checkpoint-N/`) cannot be resumed from, or None if it is whole."""
    folder = Path(folder)
    try:
        state = json.loads((folder / STATE).read_text())
    except FileNotFoundError:
        return f"no {STATE}"
    except (OSError, ValueError):
        return f"unreadable {STATE}"
    match = _CHECKPOINT.match(folder.name)
    if match and state.get("global_step") != int(match.group(1)):
        return f"{STATE} is for step {state.get('global_step')}"
    # DeepSpeed adds `latest` beside its global_stepN/ folder; FSDP may save sharded pytorch_model_fsdp_0/ instead
    if not any((folder / w).exists() for w in (*_WEIGHTS, "latest")) and not any(folder.glob("pytorch_model_fsdp*")):
        return "no model weights"
    index = folder / "model.safetensors.index.json"
    try:
        shards = set(json.loads(index.read_text())["weight_map"].values()) if index.exists() else set()
    except (OSError, ValueError, KeyError, AttributeError):
        return f"unreadable {index.name}"
    for f in sorted(set(folder.glob("*.safetensors")) | {folder / s for s in shards}):
        if not f.exists() or not _safetensors_whole(f):
            return f"{f.name} is truncated or missing"
    for f in sorted([*folder.glob("*.pt"), *folder.glob("*.pth"), *folder.glob("*.bin")]):
        if not zipfile.is_zipfile(f):  # torch.save's format; a cut file has lost its closing directory
            return f"{f.name} is truncated"
    return None


def resume_point(checkpoints: str | Path, tag: str) -> str | None:
    """The newest whole `checkpoint-N/` under `checkpoints` (None if there is none); unfinished checkpoints are
    removed, one console line each, and the resume is announced in one line."""
    checkpoints = Path(checkpoints)
    if not checkpoints.is_dir():
        return None
    found = sorted((int(m.group(1)), p) for p in checkpoints.iterdir()
                   if p.is_dir() and (m := _CHECKPOINT.match(p.name)))
    last = None
    for step, folder in reversed(found):
        reason = incomplete_reason(folder)
        if reason is None:
            last = last or (step, folder)
            continue
        shutil.rmtree(folder, ignore_errors=True)
        _say(tag, f"removed the unfinished checkpoint {folder} ({reason}; a save was cut short)")
    if last is None:
        return None
    _say(tag, f"Resuming from checkpoint {last[0]} ({last[1]})")
    return str(last[1])


def is_disk_full(exc: BaseException, folder: Path) -> bool:
    """True if `exc` (or what it was raised from) is a write that failed for lack of space under `folder`."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(seen)
        if "No space left on device" in text or "os error 28" in text or "Disk quota exceeded" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    # torch.save's zip writer reports a failed write without the OS's reason: confirm by the space left
    if isinstance(exc, RuntimeError) and re.search(r"iostream error|file write failed|unexpected pos", repr(exc)
                                                   + repr(exc.__context__)):
        try:
            return shutil.disk_usage(folder).free < 64 << 20
        except OSError:
            return False
    return False


def train_resuming(trainer, tag: str) -> str | None:
    """`trainer.train()` from the newest whole checkpoint in `trainer.args.output_dir` (see `resume_point`); a full
    disk becomes a one-line SidrecError that says how to go on. Returns the checkpoint resumed from, or None."""
    checkpoints = Path(trainer.args.output_dir)
    last = resume_point(checkpoints, tag)
    try:
        trainer.train(resume_from_checkpoint=last)
    except Exception as e:
        if not is_disk_full(e, checkpoints if checkpoints.exists() else checkpoints.parent):
            raise
        cut = [p for p in checkpoints.glob("checkpoint-*") if _CHECKPOINT.match(p.name) and incomplete_reason(p)]
        where = (f"saving {max(cut, key=lambda p: int(p.name.split('-')[1]))}" if cut
                 else f"writing under {checkpoints.parent}")
        raise SidrecError(f"the disk is full: {tag} stopped while {where}; free space, then re-run the same command "
                          f"to resume") from e
    return last
