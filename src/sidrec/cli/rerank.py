"""`sidrec rerank`: hybrid ranking of existing evaluation folders (no model); `sidrec eval --rerank` calls
`rerank_after_eval`. The logic lives in `sidrec.evaluate.fusion`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from sidrec.cli.app import app

console = Console()


def parse_weight(weight: str) -> float | str:
    """'auto' or a λ >= 0 (a SidrecError otherwise), checked before any model is loaded."""
    from sidrec.rerank import check_weight

    return "auto" if weight.strip().lower() == "auto" else check_weight(weight)


def print_gains(report: dict, out: Path) -> None:
    from sidrec.rerank import format_gains

    for line in format_gains(report):
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"re-ranked evaluation in {out} (gains.json: every row group)", highlight=False)


def check_scorer_early(scorers: List[Path], data: Path, sids: Path) -> None:
    """Fail on a scorer that does not fit the data or SIDs before any beam search runs."""
    from sidrec.data.canonical import Dataset
    from sidrec.rerank import load_checked_scorer
    from sidrec.sid.io import load_sids

    load_checked_scorer(scorers, Dataset.load(data), load_sids(sids)[0], sids)


def rerank_after_eval(out: Path, data: Path, sids: Path, scorers: List[Path], weight, valid_eval: Optional[Path]):
    from sidrec.rerank import rerank_eval

    report = rerank_eval(out, data, scorers, out / "rerank", weight, valid_eval=valid_eval, sids=sids)
    print_gains(report, out / "rerank")
    return report


@app.command("rerank")
def rerank_cmd(
    eval_: Path = typer.Option(..., "--eval", help="`sidrec eval` folder to re-rank (test split)."),
    data: Path = typer.Option(..., help="Canonical dataset folder the evaluation ran on."),
    scorer: List[Path] = typer.Option(..., help="SASRec run folder; repeat to average several runs."),
    out: Path = typer.Option(..., help="Re-ranked evaluation folder: results.json, predictions.jsonl, gains.json."),
    valid_eval: Optional[Path] = typer.Option(None, help="`sidrec eval --split valid` folder of the same model."),
    weight: str = typer.Option("auto", help="λ >= 0, or auto: the grid point with the best valid NDCG@10."),
    sids: Optional[Path] = typer.Option(None, help="SID folder (default: the one recorded in the evaluation)."),
    group: Optional[int] = typer.Option(None, help="Re-rank only the first N beams of each row (default: all)."),
    cold: bool = typer.Option(False, help="Cold rows (no train row or history <= 2) and the others get their own λ "
                                          "and recency-prior weight μ, both picked on valid."),
    transition: bool = typer.Option(True, help="With weight auto, add the transition prior τ · log(1 + count of "
                                               "(last history item -> beam's item)), τ picked on valid with λ."),
):
    """Hybrid ranking: beam log-likelihood + λ · z(SASRec logit) over each row's beams, λ picked on valid."""
    from sidrec.rerank import TRANSITION_GRID, rerank_eval

    report = rerank_eval(eval_, data, scorer, out, parse_weight(weight), valid_eval=valid_eval, sids=sids,
                         group=group, cold=cold, transition_grid=TRANSITION_GRID if transition else (0.0,))
    print_gains(report, out)
