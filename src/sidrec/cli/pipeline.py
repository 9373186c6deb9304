"""`sidrec pipeline`: every stage of the workflow over one run folder, resumable."""

from pathlib import Path
from typing import List, Optional

import typer

from sidrec.cli.app import app


@app.command("pipeline")
def pipeline_cmd(
    config: Optional[Path] = typer.Option(None, help="Run config (sections embed, sid, sft, rl, eval, analysis), "
                                                     "e.g. configs/cpu.yaml or configs/smoke.yaml."),
    data: Optional[Path] = typer.Option(None, help="MiniOneRec folder or canonical dataset folder (default: the "
                                                   "demo's search: ./data/..., ../shared/data/..., download)."),
    out: Path = typer.Option(..., help="Run folder; finished stages in it are skipped on re-runs."),
    from_: Optional[str] = typer.Option(None, "--from", help="Rerun from this stage on (data, embed, sid, sft, rl, "
                                                              "eval, analyze)."),
    until: Optional[str] = typer.Option(None, help="Stop after this stage."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override any key, e.g. --set rl.enabled=true."),
    interactive: bool = typer.Option(False, help="Ask at each stage: run / skip / rerun (/ change SID method)."),
    iterate: int = typer.Option(0, help="Then N rounds of analyze -> optimize --auto -> retrain -> compare."),
):
    """data -> embed -> sid -> sft -> rl (optional) -> eval -> analyze, cached per stage under OUT."""
    from sidrec.pipeline import interactive_ask, load_pipeline_config, run_pipeline

    cfg = load_pipeline_config(config, set_)
    run_pipeline(cfg, data, out, start=from_, until=until, ask=interactive_ask if interactive else None,
                 iterate=iterate)
