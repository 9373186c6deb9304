"""`sidrec` command line. Each module below registers its commands on `app`; `main` turns user errors into one line."""

import sys

from rich.console import Console

from sidrec.cli.app import app
from sidrec.errors import SidrecError

from sidrec.cli import analysis, baseline, data, demo, generative, optimize, pipeline, rerank, serve, sid  # noqa: E402,F401  (registers commands)


def main() -> None:
    try:
        app()
    except SidrecError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)


__all__ = ["app", "main"]
