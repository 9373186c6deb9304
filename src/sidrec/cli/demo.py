"""`sidrec baselines`: popularity + SASRec on one dataset and their metrics table (`make baselines`)."""

from pathlib import Path
from typing import List, Optional

import typer

from sidrec.cli.app import app

DATA = typer.Option(None, help="MiniOneRec folder or canonical dataset; default: first found of "
                    "./data/Industrial_and_Scientific, ../shared/data/amazon18/Industrial_and_Scientific, else "
                    "download Amazon 2018.")
CONFIG = typer.Option(Path("configs/sasrec.yaml"), help="SASRec config YAML (section `sasrec`).")
SET = typer.Option(None, "--set", help="Override a config key, e.g. sasrec.max_epochs=5.")


@app.command("baselines")
def baselines_cmd(data: Optional[Path] = DATA, out: Path = typer.Option(Path("runs/baselines"), help="Output folder."),
                  config: Optional[Path] = CONFIG, set_: Optional[List[str]] = SET):
    """Import data, train and evaluate the popularity and SASRec baselines, print the metrics table."""
    from sidrec.demo import run_baselines

    run_baselines(data, out, config if config and config.exists() else None, set_)


@app.command("demo", help="Deprecated name of `sidrec baselines` (the whole workflow is `sidrec pipeline`, i.e. "
                          "`make demo`).")
def demo_cmd(data: Optional[Path] = DATA, out: Path = typer.Option(Path("runs/baselines"), help="Output folder."),
             config: Optional[Path] = CONFIG, set_: Optional[List[str]] = SET):
    typer.echo("`sidrec demo` is deprecated and will be removed: it runs `sidrec baselines` (the whole workflow is "
               "`sidrec pipeline --config configs/cpu.yaml`, i.e. `make demo`)", err=True)
    baselines_cmd(data, out, config, set_)
