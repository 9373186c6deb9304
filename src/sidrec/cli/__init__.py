"""`sidrec` command line. Each module below registers its commands on `app`; `main` turns user errors into one line."""

import sys

import typer
from rich.console import Console
from rich.markup import escape

from sidrec.cli.app import app
from sidrec.errors import SidrecError

from sidrec.cli import analysis, baseline, data, demo, generative, optimize, pipeline, rerank, serve, sid  # noqa: E402,F401  (registers commands)


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as installed

    try:
        return installed("sidrec")
    except PackageNotFoundError:  # run from a source tree that is not installed
        from sidrec import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"sidrec {version()}")
        raise typer.Exit()


@app.callback()
def _options(_version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                           help="Print the version and exit.")) -> None:
    """Generative recommendation with semantic IDs: data, SIDs, SFT, RL, evaluation, analysis."""


def main() -> None:
    try:
        app()
    except SidrecError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)


__all__ = ["app", "main"]
