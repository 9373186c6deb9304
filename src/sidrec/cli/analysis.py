"""`sidrec analyze` and `sidrec compare`: thin wrappers over sidrec.analysis."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from sidrec.cli.app import app

console = Console()


@app.command("analyze")
def analyze_cmd(
    eval_dir: Path = typer.Option(..., "--eval", help="Evaluation folder: results.json + predictions.jsonl."),
    data: Path = typer.Option(..., "--data", help="Canonical dataset folder the model was evaluated on."),
    out: Path = typer.Option(..., "--out", help="Output: eval_results.jsonl, badcase_report.json, visualizations/."),
    sids: Optional[Path] = typer.Option(None, "--sids", help="SID folder (index.json): SID quality, SID-based "
                                                             "category and recency patterns."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="A row fails when its target is not in the top K "
                                                              "(default 10, or analysis.top_k)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file; its `analysis:` section is read."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a threshold, e.g. "
                                                                 "--set analysis.short_history_max_len=2"),
) -> None:
    """Bad-case analysis of any evaluated model: failure patterns, rank distribution, SID quality, plots."""
    from sidrec.analysis.badcase import AnalysisConfig, run_analysis
    from sidrec.config import load_config

    overrides = list(set_ or []) + ([f"analysis.top_k={top_k}"] if top_k is not None else [])
    cfg = load_config(AnalysisConfig, config, overrides, section="analysis")
    report = run_analysis(eval_dir, data, out, cfg, sids=sids)
    _print_report(report, out)


def _print_report(report: dict, out: Path) -> None:
    from rich.table import Table

    from sidrec.analysis.plots import category_text

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    t = Table(title=f"bad cases: {report['failures']}/{report['num_rows']} rows miss the top {report['top_k']} "
                    f"({pct(report['failure_rate'])})")
    for col in ("pattern", "rows", "in failures", "in successes", "lift", "lift 95% CI", "P(fail|pattern)"):
        t.add_column(col, justify="left" if col == "pattern" else "right")
    for name, p in report["patterns"].items():
        if not p["available"]:
            t.add_row(name, "-", "unavailable", "", "", "", p.get("reason", ""))
            continue
        ci = p.get("lift_ci95")
        t.add_row(name, str(p["rows_with_pattern"]), pct(p["failures"]["rate"]), pct(p["successes"]["rate"]),
                  "-" if p["lift"] is None else f"{p['lift']:.2f}", "-" if not ci else f"{ci[0]:.2f}-{ci[1]:.2f}",
                  pct(p["failure_rate_with"]))
    console.print(t)
    console.print(f"category_mismatch categories: {category_text(report['patterns']['category_mismatch'])}",
                  highlight=False)
    console.print(f"outputs in {out} (report: badcase_report.json, plots: visualizations/)", highlight=False)


@app.command("compare")
def compare_cmd(
    runs: List[Path] = typer.Argument(..., help="results.json files, evaluation, run or analysis folders; the first "
                                                "is the reference."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for compare.json, compare.md, compare.png."),
    names: Optional[str] = typer.Option(None, "--names", help="Comma-separated display names, one per input."),
    resamples: int = typer.Option(2000, "--resamples", min=100, help="Paired-bootstrap resamples per interval."),
    seed: int = typer.Option(0, "--seed", help="Seed of the paired bootstrap."),
) -> None:
    """Compare runs: HR/NDCG@5,10,20 with deltas vs the first and their 95% paired-bootstrap intervals, and
    failure-pattern rates where analyses exist."""
    from sidrec.analysis.compare import console_tables, run_compare

    cmp = run_compare(runs, out, names.split(",") if names is not None else None, resamples=resamples, seed=seed)
    for table in console_tables(cmp):
        console.print(table)
    for w in cmp["warnings"]:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    if out is not None:
        console.print(f"written: {out}/compare.json, compare.md, compare.png", highlight=False)
