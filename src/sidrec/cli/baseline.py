"""`sidrec baseline pop|sasrec`: thin wrappers over sidrec.baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from sidrec.cli.app import baseline_app

DATA = typer.Option(..., "--data", help="Canonical dataset folder (see `sidrec data`).")
OUT = typer.Option(..., "--out", help="Output folder: results.json, predictions.jsonl, valid/, manifest.json.")


def _summary(name: str, results: dict, out: Path) -> None:
    m = results["metrics"]
    Console().print(f"{name} test ({results['num_samples']} rows): HR@10 {m['HR@10']:.4f}  NDCG@10 {m['NDCG@10']:.4f}"
                    f"  -> {out}", highlight=False)


@baseline_app.command("pop")
def pop(data: Path = DATA, out: Path = OUT) -> None:
    """Most popular items in train, the same ranking for every user."""
    from sidrec.baselines.pop import run_pop

    _summary("pop", run_pop(data, out), out)


@baseline_app.command("sasrec")
def sasrec(
    data: Path = DATA,
    out: Path = OUT,
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file; its `sasrec:` section is read."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a setting, e.g. --set dropout=0.4"),
) -> None:
    """Train SASRec (full softmax), early-stop on valid NDCG@10, evaluate on test; checkpoint in OUT/model/."""
    from sidrec.baselines.sasrec import SasrecConfig, run_sasrec
    from sidrec.config import load_config

    cfg = load_config(SasrecConfig, config, set_, section="sasrec")
    _summary("sasrec", run_sasrec(data, out, cfg), out)
