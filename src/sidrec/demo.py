"""`sidrec baselines` (`make baselines`): find data, import it, run the popularity and SASRec baselines, print the
metrics table. The whole workflow is `sidrec pipeline` (`make demo`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rich.console import Console

from sidrec.data.resolve import resolve_data
from sidrec.evaluate.report import print_results

console = Console(width=None if sys.stdout.isatty() else 200)  # piped: wide enough that no column is cut to `…`


def run_baselines(data: str | Path | None, out: str | Path, sasrec_config: str | Path | None = None,
                  overrides: list[str] | None = None) -> dict[str, dict]:
    from sidrec.baselines.pop import run_pop
    from sidrec.baselines.sasrec import SasrecConfig, run_sasrec
    from sidrec.config import load_config

    out = Path(out)
    t0 = time.time()
    dataset = resolve_data(data, out)
    console.print(f"[bold]data[/]: {dataset}")
    results = {"pop": run_pop(dataset, out / "pop")}
    config = load_config(SasrecConfig, sasrec_config, overrides, section="sasrec")
    results["sasrec"] = run_sasrec(dataset, out / "sasrec", config)
    print_results(results, console)
    console.print(f"outputs in {out}/ (results.json, predictions.jsonl per model); {time.time() - t0:.0f} s in all")
    return results


run_demo = run_baselines  # the former name
