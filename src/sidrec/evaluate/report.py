"""Results as tables: the same rendering for the demo, `sidrec eval` and `sidrec compare`."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

REPORT_KS = (5, 10, 20)  # fits an 80-column terminal; results.json has every K


def results_table(results: dict[str, dict], title: str = "test metrics (exact items)", ks=REPORT_KS) -> Table:
    table = Table(title=title)
    table.add_column("model", no_wrap=True)
    table.add_column("rows", justify="right")
    for k in ks:
        table.add_column(f"HR@{k}", justify="right")
        table.add_column(f"NDCG@{k}", justify="right")
    for name, res in results.items():
        m = res["metrics"]
        table.add_row(name, str(res["num_samples"]), *[f"{m[f'{p}@{k}']:.4f}" for k in ks for p in ("HR", "NDCG")])
    return table


def print_results(results: dict[str, dict], console: Console | None = None, **kw) -> None:
    (console or Console()).print(results_table(results, **kw))
