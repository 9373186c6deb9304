"""`sidrec pipeline`: every stage of the workflow over one run folder, resumable."""

from pathlib import Path
from typing import List, Optional

import typer

from sidrec.cli.app import app


@app.command("pipeline")
def pipeline_cmd(
    config: Optional[Path] = typer.Option(None, help="Run config (sections embed, sid, sft, scorer, rl, eval, "
                                                     "analysis), e.g. configs/cpu.yaml, configs/smoke.yaml, or a "
                                                     "run folder's config.yaml."),
    data: Optional[Path] = typer.Option(None, help="MiniOneRec folder or canonical dataset folder (default: the "
                                                   "search order ./data/..., ../shared/data/..., download)."),
    out: Path = typer.Option(..., help="Run folder; finished stages in it are skipped on re-runs."),
    from_: Optional[str] = typer.Option(None, "--from", help="Rerun from this stage on (data, embed, sid, sft, "
                                                              "scorer, rl, eval_sft, eval, rerank, analyze)."),
    until: Optional[str] = typer.Option(None, help="Stop after this stage."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override any key, e.g. --set rl.enabled=false."),
    interactive: bool = typer.Option(False, help="Ask at each stage: run / skip / rerun (/ change SID method)."),
    iterate: int = typer.Option(0, help="Then N rounds of analyze -> optimize --auto -> retrain -> compare."),
    update_from: Optional[Path] = typer.Option(None, help="A finished run folder: --data is a later slice (`sidrec "
                                                          "data split-time`); runs data -> embed -> sid (assign) -> "
                                                          "update -> eval -> analyze from that run's model and SIDs, "
                                                          "with its config.yaml unless --config is given."),
):
    """data -> embed -> sid -> sft -> scorer -> rl -> eval -> rerank -> analyze, cached per stage under OUT."""
    from sidrec.pipeline import RESOLVED, load_pipeline_config, run_pipeline

    if config is None and update_from is not None and (update_from / RESOLVED).is_file():
        config = update_from / RESOLVED  # the parent's settings: the same embedding model and evaluation
    cfg = load_pipeline_config(config, set_)
    run_pipeline(cfg, data, out, start=from_, until=until, ask=interactive_ask if interactive else None,
                 iterate=iterate, update_from=update_from)


def interactive_ask(stage: str, state: str) -> str:
    """One stage's question: "run" (if needed), "skip", "rerun", or "set:sid.method=M" (then run if needed)."""
    from sidrec.errors import SidrecError
    from sidrec.sid.config import METHODS

    choices = {"r": "run", "s": "skip", "R": "rerun"}
    extra = ""
    if stage == "sid":
        choices["m"] = "method"
        extra = " / [m] change SID method"
    default = "s" if state == "done" else "r"
    while True:
        answer = typer.prompt(f"stage {stage} ({state}): [r]un if needed / [s]kip / [R]erun{extra}", default=default)
        if answer in choices:
            break
        typer.echo(f"'{answer}' is not one of {', '.join(choices)}")
    if choices[answer] == "method":
        method = typer.prompt(f"SID method ({', '.join(METHODS)})", default="rqkmeans-constrained")
        if method not in METHODS:
            raise SidrecError(f"unknown SID method '{method}'; choose from {', '.join(METHODS)}")
        return f"set:sid.method={method}"
    return choices[answer]
