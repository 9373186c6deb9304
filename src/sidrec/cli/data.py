"""`sidrec data ...` commands: thin wrappers over sidrec.data."""

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from sidrec.cli.app import data_app

console = Console()


@data_app.command("import-minionerec")
def import_minionerec_cmd(
    src: Path = typer.Argument(..., help="MiniOneRec data folder (train/ valid/ test/ index/ info/)."),
    out: Path = typer.Option(..., "--out", help="Canonical dataset folder to write."),
    max_history: int = typer.Option(10, help="Longest history kept (MiniOneRec: 10)."),
):
    """Import a MiniOneRec folder (CSVs, item.json, index.json, info, .inter) as a canonical dataset."""
    from sidrec.data.minionerec import import_minionerec

    ds = import_minionerec(src, out, max_history=max_history)
    console.print(f"imported {src} -> {out}: {ds.counts()}")


@data_app.command("export-minionerec")
def export_minionerec_cmd(
    data: Path = typer.Argument(..., help="Canonical dataset folder."),
    out: Path = typer.Option(..., "--out", help="MiniOneRec folder to write."),
    sids: Optional[Path] = typer.Option(None, help="SID folder or index.json (default: DATA/sids)."),
):
    """Write a canonical dataset and its SIDs in MiniOneRec's layout."""
    from sidrec.data.minionerec import export_minionerec

    export_minionerec(data, out, sids=sids)
    console.print(f"exported {data} -> {out}")
