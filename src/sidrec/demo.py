"""The main job behind `make demo`: find data, import it, run the baselines, print the metrics table.

Later stages (SIDs, SFT, RL, analysis) join here as they land.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from sidrec.data.resolve import resolve_data
from sidrec.evaluate.report import print_results

console = Console()


def run_demo(data: str | Path | None, out: str | Path, sasrec_config: str | Path | None = None,
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
