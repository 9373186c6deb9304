"""`sidrec demo`: the main job (`make demo`)."""

from pathlib import Path
from typing import List, Optional

import typer

from sidrec.cli.app import app


@app.command("demo")
def demo_cmd(
    data: Optional[Path] = typer.Option(None, help="MiniOneRec folder or canonical dataset; default: first found of "
                                        "./data/Industrial_and_Scientific, ../shared/data/amazon18/Industrial_and_Scientific, "
                                        "else download Amazon 2018."),
    out: Path = typer.Option(Path("runs/demo"), help="Run folder."),
    config: Optional[Path] = typer.Option(Path("configs/sasrec.yaml"), help="SASRec config YAML (section `sasrec`)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a config key, e.g. sasrec.max_epochs=5."),
):
    """Import data, train and evaluate the baselines, print the metrics table."""
    from sidrec.demo import run_demo

    run_demo(data, out, config if config and config.exists() else None, set_)
