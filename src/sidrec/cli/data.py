"""`sidrec data ...` commands: thin wrappers over sidrec.data."""

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

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
    for line in ds.meta.get("warnings", []):
        console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False)


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


@data_app.command("amazon18")
def amazon18_cmd(
    category: str = typer.Option(..., help="Amazon 2018 category, e.g. Industrial_and_Scientific."),
    out: Path = typer.Option(..., "--out", help="Canonical dataset folder to write."),
    reviews: Optional[Path] = typer.Option(None, help="Local reviews file (.json or .json.gz); default: download."),
    meta: Optional[Path] = typer.Option(None, help="Local metadata file (.json or .json.gz); default: download."),
    start: str = typer.Option("2016-10", help="First month kept (YYYY-MM)."),
    end: str = typer.Option("2018-11", help="Last month bound (YYYY-MM; reviews up to its first second)."),
    user_k: int = typer.Option(5, "--user-k", help="Minimum interactions per user (iterative k-core)."),
    item_k: int = typer.Option(5, "--item-k", help="Minimum interactions per item (iterative k-core)."),
    max_history: int = typer.Option(10, help="Longest history per sample."),
    cache_dir: Optional[Path] = typer.Option(None, help="Download cache (default $SIDREC_CACHE or ~/.cache/sidrec)."),
    base_url: Optional[str] = typer.Option(None, help="Mirror of the Amazon 2018 files."),
    progress: bool = typer.Option(True, help="Show progress bars."),
):
    """Preprocess raw Amazon 2018 reviews + metadata (MiniOneRec's rules, with its defects fixed)."""
    from sidrec.data.amazon18 import AMAZON18_URL, preprocess_amazon18

    ds = preprocess_amazon18(category, out, reviews=reviews, meta=meta, start=start, end=end, user_k=user_k,
                             item_k=item_k, max_history=max_history, cache_dir=cache_dir,
                             base_url=base_url or AMAZON18_URL, progress=progress)
    console.print(f"wrote {out}: {ds.counts()}; skipped: {ds.meta.get('skipped', {})}")


@data_app.command("import-interactions")
def import_interactions_cmd(
    interactions: Path = typer.Option(..., help="CSV or Parquet of (user, item, timestamp) rows."),
    items: Path = typer.Option(..., help="CSV or Parquet of items (id, title, ...)."),
    out: Path = typer.Option(..., "--out", help="Canonical dataset folder to write."),
    user_col: str = typer.Option("user", "--user-col"),
    item_col: str = typer.Option("item", "--item-col"),
    time_col: str = typer.Option("timestamp", "--time-col", help="Unix seconds or a date/datetime column."),
    item_id_col: str = typer.Option("item_id", "--item-id-col", help="Item id column of the items file."),
    title_col: str = typer.Option("title", "--title-col"),
    description_col: Optional[str] = typer.Option(None, "--description-col"),
    brand_col: Optional[str] = typer.Option(None, "--brand-col"),
    categories_col: Optional[str] = typer.Option(None, "--categories-col", help="List column, or '|'-separated text."),
    start: Optional[str] = typer.Option(None, help="First month kept (YYYY-MM)."),
    end: Optional[str] = typer.Option(None, help="Last month bound (YYYY-MM)."),
    user_k: int = typer.Option(5, "--user-k"),
    item_k: int = typer.Option(5, "--item-k"),
    max_history: int = typer.Option(10),
    name: Optional[str] = typer.Option(None, help="Dataset name (default: the interactions file's stem)."),
):
    """Bring your own logs (Amazon 2023, MovieLens, ...): same window, k-core, history and split rules."""
    from sidrec.data.interactions import import_interactions

    ds = import_interactions(interactions, items, out, user_col=user_col, item_col=item_col, time_col=time_col,
                             item_id_col=item_id_col, title_col=title_col, description_col=description_col,
                             brand_col=brand_col, categories_col=categories_col, start=start, end=end,
                             user_k=user_k, item_k=item_k, max_history=max_history, name=name)
    console.print(f"wrote {out}: {ds.counts()}; skipped: {ds.meta.get('skipped', {})}")


@data_app.command("split-time")
def split_time_cmd(
    data: Path = typer.Argument(..., help="Canonical dataset folder."),
    out_old: Path = typer.Option(..., "--out-old", help="Dataset of the training rows before the cut."),
    out_new: Path = typer.Option(..., "--out-new", help="The update slice: the rows from the cut on, all items."),
    at: Optional[str] = typer.Option(None, help="Cut time: unix seconds or a date (UTC), e.g. 2018-06-01."),
    fraction: Optional[float] = typer.Option(None, help="Cut after this share of the training rows instead."),
):
    """Cut the training period in two: the data a model is trained on, and the later slice `sidrec update` adds."""
    from sidrec.data.temporal import split_time_folders

    s = split_time_folders(data, out_old, out_new, at=at, fraction=fraction)
    console.print(f"cut at {s['at']}: {out_old} {s['old_rows']} rows, {s['old_items']} items; {out_new} "
                  f"{s['new_rows']} rows, {s['new_items']} new items ({s['new_items_in_slice']} in its rows)",
                  soft_wrap=True)
