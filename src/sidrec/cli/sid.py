"""`sidrec embed` and `sidrec sid build|inspect`: thin wrappers over sidrec.embed and sidrec.sid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from sidrec.cli.app import app, sid_app

CONFIG = typer.Option(None, "--config", help="YAML file; its `embed:` / `sid:` section is read (see configs/sid.yaml).")
SET = typer.Option(None, "--set", help="Override a setting, e.g. --set rqvae.epochs=200")


def _as_overrides(flags: dict) -> list[str]:
    """Flags given on the command line as key=value overrides (validated like the config file, applied last)."""
    return [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]


@app.command("embed")
def embed(
    data: Path = typer.Option(..., "--data", help="Canonical dataset folder."),
    out: Path = typer.Option(..., "--out", help="Embedding file (.npy); a .json sidecar is written beside it."),
    model: Optional[str] = typer.Option(None, "--model", help="Hub name, local folder, or `minilm` (offline)."),
    fields: Optional[list[str]] = typer.Option(None, "--fields", help="Text fields, e.g. --fields title,description"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    max_seq_length: Optional[int] = typer.Option(None, "--max-seq-length", help="Tokens kept per text."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, or cuda:0,cuda:1 for several GPUs."),
    force: bool = typer.Option(False, "--force", help="Re-embed even if the file matches."),
    config: Optional[Path] = CONFIG,
    set_: Optional[list[str]] = SET,
) -> None:
    """Embed every item's text with a sentence-transformers model."""
    from sidrec.config import load_config
    from sidrec.embed import embed_items
    from sidrec.sid.config import EmbedConfig

    flags = {"model": model, "batch_size": batch_size, "force": force or None, "max_seq_length": max_seq_length,
             "fields": [f.strip() for part in fields for f in part.split(",") if f.strip()] if fields else None,
             "device": device.split(",") if device and "," in device else device}
    cfg = load_config(EmbedConfig, config, [*(set_ or []), *_as_overrides(flags)], section="embed")
    info = embed_items(data, out, **cfg.model_dump())
    note = " (reused)" if info["reused"] else f" in {info['seconds']} s"
    Console().print(f"{info['num_items']} items x {info['dim']} with {cfg.model}{note}; "
                    f"{info['empty_text']['count']} with empty text -> {out}", highlight=False)


@sid_app.command("build")
def build(
    method: Optional[str] = typer.Option(None, "--method", help="rqkmeans | rqkmeans-constrained | rqkmeans-plus | rqvae"),
    emb: Path = typer.Option(..., "--emb", help="Embedding file from `sidrec embed`."),
    data: Optional[Path] = typer.Option(None, "--data", help="Canonical dataset folder (checks the item count)."),
    out: Path = typer.Option(..., "--out", help="Output folder: index.json, quality.json, codebooks, manifest.json."),
    levels: Optional[int] = typer.Option(None, "--levels"),
    codebook: Optional[int] = typer.Option(None, "--codebook"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    collision: Optional[str] = typer.Option(None, "--collision", help="reassign (fixed length) | dedup-level"),
    threads: Optional[int] = typer.Option(None, "--threads", help="Cap CPU threads (1 is fastest on a busy CPU)."),
    config: Optional[Path] = CONFIG,
    set_: Optional[list[str]] = SET,
) -> None:
    """Build semantic IDs from item embeddings."""
    from sidrec.config import load_config
    from sidrec.sid.build import build_sids, quality_table
    from sidrec.sid.config import SidConfig

    flags = {"method": method, "levels": levels, "codebook": codebook, "seed": seed, "collision": collision,
             "threads": threads}
    cfg = load_config(SidConfig, config, [*(set_ or []), *_as_overrides(flags)], section="sid")
    q = build_sids(cfg.method, emb, data, out, levels=cfg.levels, codebook=cfg.codebook, seed=cfg.seed,
                   collision=cfg.collision, threads=cfg.threads, **cfg.method_params())
    Console().print(quality_table(q))


@sid_app.command("inspect")
def inspect(out: Path = typer.Argument(..., help="A `sid build` folder, or any MiniOneRec index.json.")) -> None:
    """Print SID quality: per-level code usage and entropy, collisions, reconstruction error."""
    from sidrec.sid.build import quality_table, read_quality

    Console().print(quality_table(read_quality(out)))


@sid_app.command("assign")
def assign(
    sids: Path = typer.Option(..., "--sids", help="A `sid build` folder (read only)."),
    emb: Path = typer.Option(..., "--emb", help="The new items' embeddings (`sidrec embed`, the build's model)."),
    data: Optional[Path] = typer.Option(None, "--data", help="The grown dataset: its items beyond the index are new."),
    items: Optional[Path] = typer.Option(None, "--items", help="New item ids, one per line, row i of --emb each."),
    out: Path = typer.Option(..., "--out", help="New SID folder: old SIDs unchanged plus the new items'."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Cap CPU threads."),
) -> None:
    """Give new items SIDs with a build's fitted codebooks: no refit, no existing SID changes."""
    from sidrec.sid.assign import assign_sids

    q = assign_sids(sids, emb, out, data=data, items=items, threads=threads)
    a, c = q["assign"], Console(highlight=False, soft_wrap=True)
    c.print(f"{a['kept']} new items kept their own SID")
    c.print(f"{a['moved_from_existing']} collided with an existing SID and moved to the nearest free one")
    c.print(f"{a['moved_from_new']} collided with another new item and moved to the nearest free one")
    c.print(f"{a['items']} new items assigned (ids {a['ids'][0]}..{a['ids'][1]}), {a['collisions_resolved']} "
            f"collisions resolved; {q['num_items']} items, {q['after']['collision_groups']} colliding SIDs -> {out}")
