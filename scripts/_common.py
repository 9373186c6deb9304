"""Shared by the Python wrappers in scripts/ (standard library only): find sidrec, print the command, run it.

Each wrapper maps the workflow guide's flags onto one `sidrec` command, prints it (`+ sidrec ...`, ready to copy) and
runs it. Environment: SIDREC (the sidrec executable, default <repo>/.venv/bin/sidrec).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROG = Path(sys.argv[0]).name


def sidrec_executable() -> str:
    exe = os.environ.get("SIDREC") or str(REPO / ".venv" / "bin" / "sidrec")
    if os.access(exe, os.X_OK) or shutil.which(exe):
        return exe
    sys.exit(f"{PROG}: sidrec not found at {exe}: run 'make test' (or 'make demo') in {REPO} to create .venv, "
             f"or set SIDREC=/path/to/sidrec")


def show(args: list[str]) -> None:
    print("+ " + shlex.join(["sidrec", *map(str, args)]), flush=True)


def exec_sidrec(args: list[str]) -> None:
    """Print the command, then replace this process with it."""
    exe = sidrec_executable()
    show(args)
    sys.stdout.flush()
    os.execvp(exe, [exe, *map(str, args)])


def call_sidrec(args: list[str]) -> int:
    """Print the command and run it; returns its exit status."""
    exe = sidrec_executable()
    show(args)
    return subprocess.call([exe, *map(str, args)])


def note(msg: str) -> None:
    print(f"{PROG}: note: {msg}", file=sys.stderr, flush=True)


def die(msg: str) -> None:
    sys.exit(f"{PROG}: {msg}")


def str2bool(text: str) -> bool:
    """MiniOneRec's scripts pass booleans as words (`--sample_train True`)."""
    t = str(text).strip().lower()
    if t in ("true", "1", "yes", "y", "on"):
        return True
    if t in ("false", "0", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def model_dir(path: str | Path) -> Path:
    """A `sidrec sft`/`sidrec rl` run folder -> its model/ folder; a model folder stays as it is."""
    p = Path(path)
    return p / "model" if (p / "model" / "config.json").is_file() else p


def run_label(path: str | Path) -> str:
    p = Path(str(path).rstrip("/"))
    return p.parent.name if p.name == "model" else p.name


def full_category(name: str) -> str:
    return {"Industrial": "Industrial_and_Scientific", "Office": "Office_Products"}.get(name, name)
