"""`sidrec optimize`: a bad-case report -> an optimized run config (strategies in `sidrec.optimize`)."""

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from sidrec.cli.app import app

console = Console()


def _ask(report, suggested) -> list[str]:
    """Interactive choice: the report's patterns, the strategies, the --auto pick as the default answer."""
    from sidrec.errors import SidrecError
    from sidrec.optimize.strategies import REGISTRY, check_names

    t = Table(title=f"{report.source}: failure rate {report.failure_rate:.1%}")
    for col in ("pattern", "% of failures", "failing rows", "% of successes", "lift", "lift 95% CI",
                "meets --auto rule"):
        t.add_column(col, justify="right" if col != "pattern" else "left")
    for p in report.patterns.values():
        lift = p.effective_lift
        t.add_row(p.name, "n/a" if p.rate_failures is None else f"{p.rate_failures:.1%}",
                  "n/a" if p.count_failures is None else str(p.count_failures),
                  "n/a" if p.rate_successes is None else f"{p.rate_successes:.1%}",
                  "n/a" if lift is None else f"{lift:.2f}",
                  "n/a" if p.lift_ci is None else f"{p.lift_ci[0]:.2f}-{p.lift_ci[1]:.2f}",
                  "yes" if p.triggers() else "")
    console.print(t)
    if report.sid is not None:
        console.print(report.sid.describe() + ("; " + "; ".join(report.sid.problems()) if report.sid.problems()
                                               else ""))
    picked = {c.name for c in suggested}
    s = Table(title="strategies (* = --auto pick)")
    s.add_column("name")
    s.add_column("what it changes")
    for name, strat in REGISTRY.items():
        s.add_row(name + (" *" if name in picked else ""), strat.summary)
    console.print(s)
    while True:
        answer = typer.prompt("Strategies, comma-separated", default=",".join(c.name for c in suggested))
        try:
            return check_names([answer])
        except SidrecError as e:
            console.print(f"[red]{e}[/]")


@app.command("optimize")
def optimize_cmd(
    report: Path = typer.Option(..., "--report", help="badcase_report.json from `sidrec analyze` (or its folder)."),
    out: Path = typer.Option(..., "--out", help="The optimized YAML to write (atomically)."),
    auto: bool = typer.Option(False, "--auto", help="Pick strategies by the documented rules."),
    strategy: Optional[List[str]] = typer.Option(
        None, "--strategy", help="long_tail | cold_start | short_history | recency_bias | sid_quality | "
                                 "hyperparameter; repeat or comma-separate."),
    base: Optional[Path] = typer.Option(None, "--base", help="Run config to start from: a YAML, a run's pipeline.json "
                                                             "or run folder. Default: the config of the run the "
                                                             "report was computed on."),
    data: Optional[Path] = typer.Option(None, "--data", help="Check that the report was computed on this dataset."),
):
    """Turn a bad-case report into config overrides (sections sft / rl / sid) merged into a base config.

    Without --auto or --strategy, shows the report's patterns and asks which strategies to apply."""
    from sidrec.optimize.strategies import optimize

    text, applied = optimize(report, out, names=strategy, auto=auto, base=base, choose=_ask, data=data)
    console.print(text.splitlines()[0].lstrip("# "), highlight=False, soft_wrap=True)
    t = Table(title=f"{out}")
    for col in ("strategy", "setting", "before", "after"):
        t.add_column(col)
    for a in applied:
        for i, (key, old, new) in enumerate(a.changes or [("(no change)", "", "")]):
            t.add_row(a.name if i == 0 else "", key, str(old), str(new))
    console.print(t)
    for a in applied:
        console.print(f"[bold]{a.name}[/]: {a.reason}", highlight=False, soft_wrap=True)
