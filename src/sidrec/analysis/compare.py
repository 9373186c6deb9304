"""`sidrec compare`: metrics (and bad-case patterns, when analyses exist) of several runs side by side.

Each input is a results.json, an evaluation folder (results.json), a run folder holding eval/results.json, or an
analysis folder / badcase_report.json from `sidrec analyze`. An analysis is picked up when it is passed, or when a
badcase_report.json sits in the input folder or its `analysis/` subfolder. The first input is the reference:
deltas are absolute (x - ref) and relative ((x - ref) / ref, None when ref is 0).

Each delta carries its 95 % paired-bootstrap interval (`ci95`, `rel_ci95`; `sidrec.evaluate.stats`): the rows of
both runs' predictions.jsonl are resampled together (`resamples` draws, seeded), so an interval that holds 0 is a
difference the test rows cannot tell from noise. The interval is None, with a warning, when a run has no
predictions.jsonl beside its results.json or the two runs were not evaluated on the same rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from sidrec.analysis.badcase import PATTERNS, REPORT
from sidrec.errors import SidrecError
from sidrec.evaluate.stats import RESAMPLES, compare_ranks, load_ranks, paired_ranks
from sidrec.io import atomic_path, read_json, write_json, write_manifest, write_text

METRICS = tuple(f"{m}@{k}" for k in (5, 10, 20) for m in ("HR", "NDCG"))


def _default_name(path: Path) -> str:
    path = path.resolve()
    if path.is_file():
        path = path.parent
    parts = [p for p in path.parts[-3:]]
    generic = {"eval", "analysis", "test", "valid"}
    while len(parts) > 1 and parts[-1] in generic:
        parts.pop()
    return parts[-1]


def _report_near(folder: Path) -> Path | None:
    for cand in (folder / REPORT, folder / "analysis" / REPORT):
        if cand.is_file():
            return cand
    return None


def resolve_run(arg: str | Path) -> dict:
    """{"path", "results", "results_path", "report", "report_path"} for one compare input."""
    p = Path(arg)
    if not p.exists():
        raise SidrecError(f"{p}: does not exist; give a results.json, an evaluation folder, a run folder with "
                          f"eval/results.json, or an analysis folder with {REPORT}")
    results_path = report_path = None
    if p.is_file():
        if p.name == REPORT:
            report_path = p
        else:
            results_path = p
            report_path = _report_near(p.parent)
    else:
        for cand in (p / "results.json", p / "eval" / "results.json"):
            if cand.is_file():
                results_path = cand
                break
        report_path = _report_near(p) or (results_path and _report_near(results_path.parent))
        if results_path is None and report_path is None:
            raise SidrecError(f"{p}: no results.json, eval/results.json or {REPORT} here; give an evaluation, run or "
                              f"analysis folder")
    report = read_json(report_path) if report_path else None
    if report is not None and "patterns" not in report:
        raise SidrecError(f"{report_path}: not a bad-case report (no 'patterns'); write one with `sidrec analyze`")
    if results_path is None and report is not None:
        cand = Path(report.get("eval") or "") / "results.json"
        if report.get("eval") and cand.is_file():
            results_path = cand
    if results_path is not None:
        results = read_json(results_path)
    else:  # an analysis whose evaluation folder moved: its report keeps the metrics
        results = {"metrics": report.get("metrics") or {}, "num_samples": report.get("num_rows"),
                   "split": report.get("dataset", {}).get("split")}
    if not isinstance(results.get("metrics"), dict):
        raise SidrecError(f"{results_path or report_path}: no 'metrics' mapping; is this a sidrec results.json?")
    pred_path = results_path.parent / "predictions.jsonl" if results_path is not None else None
    ranks = load_ranks(pred_path) if pred_path is not None and pred_path.is_file() else None
    return {"path": str(p), "results": results, "results_path": str(results_path) if results_path else None,
            "report": report, "report_path": str(report_path) if report_path else None, "ranks": ranks}


def _delta(x, ref) -> dict:
    if x is None or ref is None:
        return {"abs": None, "rel": None}
    return {"abs": x - ref, "rel": (x - ref) / ref if ref else None}


def _metric_delta(x, ref, boot: dict | None) -> dict:
    return {**_delta(x, ref), "ci95": boot["ci"] if boot else None, "rel_ci95": boot["rel_ci"] if boot else None}


def bootstrap_deltas(runs: list[dict], names: Sequence[str], resamples: int = RESAMPLES, seed: int = 0
                     ) -> tuple[dict, list[str]]:
    """Per run after the first: {metric: paired_bootstrap vs the first run} (None where not paired), warnings."""
    out, warnings = {}, []
    ref = runs[0].get("ranks")
    for n, r in zip(names[1:], runs[1:]):
        out[n] = None
        if ref is None or r.get("ranks") is None:
            miss = [x for x, rr in ((names[0], runs[0]), (n, r)) if rr.get("ranks") is None]
            warnings.append(f"no predictions.jsonl for {', '.join(miss)}: no confidence interval for {n} vs "
                            f"{names[0]}")
            continue
        try:
            a, b = paired_ranks(ref, r["ranks"], (names[0], n))
        except SidrecError as e:
            warnings.append(f"{e}; no confidence interval for {n}")
            continue
        out[n] = compare_ranks(a, b, METRICS, resamples, seed)
    return out, warnings


def compare_runs(runs: list[dict], names: Sequence[str], resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """The comparison as a dict: metrics, deltas vs the first run with their paired-bootstrap intervals, pattern
    figures and their deltas."""
    ref = names[0]
    metrics = {n: {m: r["results"]["metrics"].get(m) for m in METRICS} for n, r in zip(names, runs)}
    boot, boot_warnings = bootstrap_deltas(runs, names, resamples, seed)
    out: dict = {
        "reference": ref,
        "runs": [{"name": n, "path": r["path"], "results": r["results_path"], "analysis": r["report_path"],
                  "num_samples": r["results"].get("num_samples"), "split": r["results"].get("split")}
                 for n, r in zip(names, runs)],
        "metrics": metrics,
        "deltas": {n: {m: _metric_delta(metrics[n][m], metrics[ref][m], (boot[n] or {}).get(m)) for m in METRICS}
                   for n in names[1:]},
        "bootstrap": {"level": 0.95, "resamples": resamples, "seed": seed, "method": "paired, rows resampled"},
        "warnings": list(boot_warnings),
    }
    splits = {(r["results"].get("split"), r["results"].get("num_samples")) for r in runs}
    if len(splits) > 1:
        out["warnings"].append(f"runs were evaluated on different splits/row counts: {sorted(map(str, splits))}")
    with_report = [(n, r["report"]) for n, r in zip(names, runs) if r["report"] is not None]
    if with_report:
        ids = {json.dumps(rep.get("dataset"), sort_keys=True) for _, rep in with_report}
        if len(ids) > 1:
            out["warnings"].append("analyses come from different datasets: "
                                   + "; ".join(f"{n}: {rep.get('dataset')}" for n, rep in with_report))
        ks = {rep.get("top_k") for _, rep in with_report}
        if len(ks) > 1:
            out["warnings"].append(f"analyses use different top_k {sorted(ks)}; failure rates are not comparable")
        pats: dict = {}
        for n, rep in with_report:
            pats[n] = {"failure_rate": rep["failure_rate"], "top_k": rep.get("top_k")}
            for name in PATTERNS:
                p = rep["patterns"].get(name)
                if p is None or not p.get("available"):
                    pats[n][name] = None
                    continue
                pats[n][name] = {"failure_rate_with": p["failure_rate_with"],
                                 "failure_rate_without": p["failure_rate_without"],
                                 "rate_in_failures": p["failures"]["rate"], "lift": p["lift"],
                                 "rows_with_pattern": p["rows_with_pattern"]}
        out["patterns"] = pats
        base_name = with_report[0][0]
        base = pats[base_name]
        out["pattern_reference"] = base_name
        out["pattern_deltas"] = {}
        for n, _ in with_report[1:]:
            d = {"failure_rate": _delta(pats[n]["failure_rate"], base["failure_rate"])}
            for name in PATTERNS:
                a, b = pats[n][name], base[name]
                d[name] = None if a is None or b is None else {
                    "failure_rate_with": _delta(a["failure_rate_with"], b["failure_rate_with"]),
                    "rate_in_failures": _delta(a["rate_in_failures"], b["rate_in_failures"])}
            out["pattern_deltas"][n] = d
    return out


# ---------------------------------------------------------------------------------------------------- rendering
def _f(x, fmt="{:.4f}") -> str:
    return "-" if x is None else fmt.format(x)


def _rel(x) -> str:
    return "-" if x is None else f"{100 * x:+.1f}%"


def _ci(ci) -> str:
    return "[-]" if not ci else f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def markdown(cmp: dict) -> str:
    names = list(cmp["metrics"])
    ref = cmp["reference"]
    lines = ["# sidrec compare", "", f"Reference: **{ref}**. Deltas are vs the reference: absolute [95% paired "
             f"bootstrap interval, {cmp['bootstrap']['resamples']} resamples], relative.", "",
             "| model | rows | " + " | ".join(METRICS) + " |", "|---|---:|" + "---:|" * len(METRICS)]
    for run, n in zip(cmp["runs"], names):
        cells = []
        for m in METRICS:
            v = cmp["metrics"][n][m]
            if n == ref:
                cells.append(_f(v))
            else:
                d = cmp["deltas"][n][m]
                cells.append(f"{_f(v)} ({_f(d['abs'], '{:+.4f}')} {_ci(d.get('ci95'))}, {_rel(d['rel'])})")
        lines.append(f"| {n} | {run['num_samples'] if run['num_samples'] is not None else '-'} | "
                     + " | ".join(cells) + " |")
    if "patterns" in cmp:
        pats = cmp["patterns"]
        pref = cmp["pattern_reference"]
        k = {p.get("top_k") for p in pats.values()}
        lines += ["", f"## Failure rate (target not in top-{'/'.join(map(str, sorted(k)))}) with each pattern",
                  "", "Cell: P(fail | pattern) [share of failures with the pattern, lift]; delta in points vs "
                      f"{pref}.", "",
                  "| model | overall | " + " | ".join(PATTERNS) + " |", "|---|---:|" + "---:|" * len(PATTERNS)]
        for n, p in pats.items():
            d = cmp["pattern_deltas"].get(n)
            cells = [_pct(p["failure_rate"]) + (f" ({100 * d['failure_rate']['abs']:+.1f} pt)" if d else "")]
            for name in PATTERNS:
                c = p[name]
                if c is None:
                    cells.append("n/a")
                    continue
                s = f"{_pct(c['failure_rate_with'])} [{_pct(c['rate_in_failures'])}, {_f(c['lift'], '{:.2f}')}]"
                if d and d[name] and d[name]["failure_rate_with"]["abs"] is not None:
                    s += f" ({100 * d[name]['failure_rate_with']['abs']:+.1f} pt)"
                cells.append(s)
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
    if cmp["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in cmp["warnings"]]
    return "\n".join(lines) + "\n"


def console_tables(cmp: dict):
    from rich.table import Table

    names = list(cmp["metrics"])
    ref = cmp["reference"]
    t = Table(title=f"metrics (exact items); deltas vs {ref}, with their 95% paired-bootstrap interval")
    t.add_column("model", no_wrap=True)
    t.add_column("rows", justify="right")
    for m in METRICS:
        t.add_column(m, justify="right")
    for run, n in zip(cmp["runs"], names):
        cells = []
        for m in METRICS:
            v = cmp["metrics"][n][m]
            d = cmp["deltas"].get(n, {}).get(m, {})
            cells.append(_f(v) if n == ref else f"{_f(v)}\n{_f(d.get('abs'), '{:+.4f}')} {_rel(d.get('rel'))}\n"
                                                f"{_ci(d.get('ci95'))}")
        t.add_row(n, str(run["num_samples"]), *cells)
    tables = [t]
    if "patterns" in cmp:
        p = Table(title="failure rate with each pattern (P(fail | pattern)), lift in brackets")
        p.add_column("model", no_wrap=True)
        p.add_column("overall", justify="right")
        for name in PATTERNS:
            p.add_column(name.replace("_", " "), justify="right")
        for n, v in cmp["patterns"].items():
            p.add_row(n, _pct(v["failure_rate"]),
                      *["n/a" if v[x] is None else f"{_pct(v[x]['failure_rate_with'])} [{_f(v[x]['lift'], '{:.2f}')}]"
                        for x in PATTERNS])
        tables.append(p)
    return tables


def plot_compare(cmp: dict, path: Path) -> None:
    from sidrec.analysis.plots import _bar_labels, _plt

    plt = _plt()
    names = list(cmp["metrics"])
    has_p = "patterns" in cmp
    fig, axes = plt.subplots(1, 2 if has_p else 1, figsize=(15 if has_p else 9, 5.2), squeeze=False)
    ax = axes[0][0]
    w = 0.8 / len(names)
    colors = plt.get_cmap("tab10").colors
    for j, n in enumerate(names):
        vals = [cmp["metrics"][n][m] or 0.0 for m in METRICS]
        b = ax.bar([i + (j - (len(names) - 1) / 2) * w for i in range(len(METRICS))], vals, w, label=n,
                   color=colors[j % 10])
        _bar_labels(ax, b, [f"{v:.3f}" for v in vals], fontsize=7 if len(names) <= 3 else 6)
    ax.set_xticks(range(len(METRICS)), METRICS)
    ax.set_ylabel("metric value (exact items)")
    ymax = max((v or 0.0) for n in names for v in cmp["metrics"][n].values())
    ax.set_ylim(0, ymax * 1.2 + 1e-9)
    ax.legend(frameon=False)
    ax.set_title("HR / NDCG @ 5, 10, 20")
    if has_p:
        ax = axes[0][1]
        pn = list(cmp["patterns"])
        cols = ["overall"] + [p for p in PATTERNS if any(cmp["patterns"][n][p] for n in pn)]
        w = 0.8 / len(pn)
        for j, n in enumerate(pn):
            v = cmp["patterns"][n]
            vals = [v["failure_rate"]] + [(v[c] or {}).get("failure_rate_with") or 0.0 for c in cols[1:]]
            b = ax.bar([i + (j - (len(pn) - 1) / 2) * w for i in range(len(cols))], vals, w, label=n,
                       color=colors[names.index(n) % 10])
            _bar_labels(ax, b, [f"{100 * x:.1f}%" for x in vals], fontsize=7 if len(pn) <= 3 else 6)
        ax.set_xticks(range(len(cols)), [c.replace("_", "\n") for c in cols])
        ax.set_ylim(0, 1.12)
        ax.yaxis.set_major_formatter(lambda x, _: f"{100 * x:.0f}%")
        k = sorted({v.get("top_k") for v in cmp["patterns"].values()}, key=str)
        ax.set_ylabel(f"failure rate (target not in top-{'/'.join(map(str, k))})")
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_title("Failure rate overall and among rows with each pattern")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def run_compare(inputs: Sequence[str | Path], out: str | Path | None = None,
                names: Sequence[str] | None = None, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Resolve the inputs, compare them and (with `out`) write compare.json, compare.md, compare.png, manifest."""
    if not inputs:
        raise SidrecError("compare needs at least one results.json / evaluation / run / analysis folder")
    if names is not None:
        names = [n.strip() for n in names]
        if len(names) != len(inputs) or any(not n for n in names):
            raise SidrecError(f"--names has {len(names)} name(s) for {len(inputs)} input(s); give one non-empty name "
                              f"per input, comma-separated")
    runs = [resolve_run(a) for a in inputs]
    if names is None:
        names = [_default_name(Path(a)) for a in inputs]
    seen: dict[str, int] = {}
    unique = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        unique.append(n if seen[n] == 1 and names.count(n) == 1 else f"{n}#{seen[n]}")
    cmp = compare_runs(runs, unique, resamples, seed)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "manifest.json").unlink(missing_ok=True)
        write_json(out / "compare.json", cmp)
        write_text(out / "compare.md", markdown(cmp))
        plot_compare(cmp, out / "compare.png")
        write_manifest(out, "compare", config={"inputs": [str(a) for a in inputs], "names": unique,
                                               "resamples": resamples, "seed": seed},
                       inputs={n: r["results_path"] or r["report_path"] for n, r in zip(unique, runs)})
    return cmp
