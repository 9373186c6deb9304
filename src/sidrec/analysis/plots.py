"""Figures and the plain-text summary of a bad-case report (matplotlib, Agg backend: no display needed).

`write_plots(report, folder)` writes failure_patterns.png, failure_rate.png, sid_quality.png and
rank_distribution.png; `summary_text(report)` is the text of summary_report.txt.
"""

from __future__ import annotations

from pathlib import Path

from sidrec.io import atomic_path

FAIL_COLOR, OK_COLOR, NA_COLOR = "#d62728", "#2ca02c", "#9e9e9e"
PLOTS = ("failure_patterns", "failure_rate", "sid_quality", "rank_distribution")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 12, "axes.titleweight": "bold",
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _label(name: str) -> str:
    return name.replace("_", " ")


def _bar_labels(ax, bars, texts, fontsize=8, inside_above=None) -> None:
    """Label each bar above its top; bars taller than `inside_above` (data units) get the label inside, in white."""
    for b, t in zip(bars, texts):
        h = b.get_height()
        inside = inside_above is not None and h > inside_above
        ax.annotate(t, (b.get_x() + b.get_width() / 2, h), xytext=(0, -3 if inside else 2), textcoords="offset points",
                    ha="center", va="top" if inside else "bottom", fontsize=fontsize,
                    color="white" if inside else "black", fontweight="bold" if inside else "normal")


def _legend(ax, items, **kw) -> None:
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=c, label=lab) for lab, c in items], frameon=False, **kw)


def _footer(ax, text: str, below: float = 40) -> None:
    """Small grey provenance line under the axes (below x labels), `below` points down from the axes' bottom."""
    ax.annotate(text, (0, 0), xycoords="axes fraction", xytext=(0, -below), textcoords="offset points",
                ha="left", va="top", fontsize=8, color="#555555")


def _percent_axis(ax, top: float) -> None:
    import numpy as np

    step = 0.2 if top > 0.5 else 0.1 if top > 0.2 else 0.05
    ax.set_ylim(0, top)
    ax.set_yticks(np.arange(0, min(top, 1.0) + 1e-9, step))
    ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")


def _subtitle(report: dict) -> str:
    ds = report.get("dataset", {})
    model = report.get("model") or report.get("eval", "")
    return f"{model}  |  {ds.get('name')} {ds.get('split')}, {report['num_rows']} rows, failure = target not in top-{report['top_k']}"


# ---------------------------------------------------------------------------------------------------- figures
def plot_failure_patterns(report: dict, path: Path) -> None:
    plt = _plt()
    pats = report["patterns"]
    names = list(pats)
    fig, ax = plt.subplots(figsize=(11, 5.5))
    w = 0.38
    ymax = 0.0
    ticks = []
    for i, name in enumerate(names):
        p = pats[name]
        if not p["available"]:
            import textwrap

            reason = "\n".join(textwrap.fill(r, 24) for r in p.get("reason", "").split("; "))
            ax.text(i, 0.02, "unavailable:\n" + reason, ha="center", va="bottom", fontsize=8, color=NA_COLOR)
            ticks.append(f"{_label(name)}\n(n/a)")
            continue
        lift = p.get("lift")
        ticks.append(f"{_label(name)}\nlift {'n/a' if lift is None else f'{lift:.2f}'}")
        for off, side, color in ((-w / 2, "failures", FAIL_COLOR), (w / 2, "successes", OK_COLOR)):
            r = p[side]["rate"] or 0.0
            ymax = max(ymax, r)
            b = ax.bar(i + off, r, w, color=color)
            _bar_labels(ax, b, [f"{_pct(p[side]['rate'])}\n{p[side]['with_pattern']}/{p[side]['rows']}"])
    _percent_axis(ax, max(ymax * 1.15, 0.1))
    ax.set_xticks(range(len(names)), ticks)
    ax.set_ylabel("share of rows that have the pattern")
    _legend(ax, [(f"failures ({report['failures']} rows)", FAIL_COLOR),
                 (f"successes ({report['successes']} rows)", OK_COLOR)], loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("Failure patterns: share of failures vs successes that have each pattern")
    _footer(ax, _subtitle(report) + "\nbar labels: rate, rows with the pattern / rows where it is decided;"
            " lift = rate among failures / rate among successes", below=38)
    _save(fig, path)


def plot_failure_rate(report: dict, path: Path) -> None:
    plt = _plt()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1, 3.2]})
    n = report["num_rows"]
    b = ax0.bar([f"hit (top-{report['top_k']})", "failure"], [report["successes"], report["failures"]],
                color=[OK_COLOR, FAIL_COLOR])
    _bar_labels(ax0, b, [f"{report['successes']}\n({_pct(report['successes'] / n)})",
                         f"{report['failures']}\n({_pct(report['failures'] / n)})"], fontsize=9)
    ax0.set_ylim(0, n * 1.15)
    ax0.set_ylabel("rows")
    ax0.set_title(f"Overall failure rate {_pct(report['failure_rate'])}")

    pats = {k: v for k, v in report["patterns"].items() if v["available"]}
    w = 0.4
    for i, (name, p) in enumerate(pats.items()):
        with_n, without_n = p["rows_with_pattern"], p["applicable_rows"] - p["rows_with_pattern"]
        for off, key, rows, color in ((-w / 2, "failure_rate_with", with_n, FAIL_COLOR),
                                      (w / 2, "failure_rate_without", without_n, "#f4a3a3")):
            bar = ax1.bar(i + off, p[key] or 0.0, w, color=color)
            _bar_labels(ax1, bar, [f"{_pct(p[key])}\nn={rows}"], inside_above=0.15)
    ax1.axhline(report["failure_rate"], color="black", ls="--", lw=1)
    _percent_axis(ax1, 1.05)
    ax1.set_xticks(range(len(pats)), [_label(n) for n in pats])
    ax1.set_ylabel(f"failure rate (target not in top-{report['top_k']})")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    ax1.legend(handles=[Patch(color=FAIL_COLOR, label="rows with the pattern"),
                        Patch(color="#f4a3a3", label="rows without it"),
                        Line2D([], [], color="black", ls="--", label=f"overall {_pct(report['failure_rate'])}")],
               loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax1.set_title("Failure rate with vs without each pattern (n = rows)")
    fig.tight_layout()
    _footer(ax0, _subtitle(report), below=30)
    _save(fig, path)


def plot_sid_quality(report: dict, path: Path) -> None:
    plt = _plt()
    q = report.get("sid_quality")
    if not q:
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.axis("off")
        ax.set_title("SID quality")
        ax.text(0.5, 0.5, "no SIDs given to `sidrec analyze` (--sids),\nso there is no SID table to measure",
                ha="center", va="center", fontsize=11, color=NA_COLOR)
        _save(fig, path)
        return
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    levels = q["per_level"]
    ax = axes[0]
    b = ax.bar([f"level {lv['level']}" for lv in levels], [lv["usage"] for lv in levels], color="#1f77b4")
    _bar_labels(ax, b, [f"{lv['used']}/{lv['codebook']} codes\nentropy {lv['entropy']:.2f}" for lv in levels],
                fontsize=9, inside_above=0.25)
    _percent_axis(ax, 1.1)
    ax.set_ylabel("share of the codebook used")
    ax.set_title("Code usage per level")

    ax = axes[1]
    ipc = q["items_per_code"]
    x = np.arange(len(ipc))
    ax.bar(x, [c["mean"] for c in ipc], 0.6, color="#17becf", label="mean")
    ax.errorbar(x, [c["mean"] for c in ipc], yerr=[[c["mean"] - c["min"] for c in ipc],
                                                   [c["max"] - c["mean"] for c in ipc]],
                fmt="none", ecolor="black", capsize=6, label="min-max")
    for xi, c in zip(x, ipc):
        ax.annotate(f"mean {c['mean']:.1f}\nmin {c['min']}, max {c['max']}", (xi, c["max"]), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, max(c["max"] for c in ipc) * 1.25)
    ax.set_xticks(x, [f"level {c['level']}\n({c['prefixes']} prefixes)" for c in ipc])
    ax.set_ylabel("items per SID prefix")
    ax.set_title("Items per code: items under each SID prefix up to a level")

    ax = axes[2]
    sizes = sorted(q["items_per_sid"].items(), key=lambda kv: int(kv[0]))
    b = ax.bar([k for k, _ in sizes], [v for _, v in sizes], color="#9467bd")
    _bar_labels(ax, b, [str(v) for _, v in sizes], fontsize=9)
    vals = [v for _, v in sizes]
    if max(vals) / max(1, min(vals)) > 50:
        ax.set_yscale("log")
        ax.set_ylabel("number of SIDs (log scale)")
    else:
        ax.set_ylim(0, max(vals) * 1.15)
        ax.set_ylabel("number of SIDs")
    ax.set_xlabel("items sharing one SID (1 = no collision)")
    tc = q["target_collided"]
    ax.set_title(f"Collisions: {q['collided_items']} of {q['num_items']} items share a SID")
    note = (f"collision rate {_pct(q['collision_rate'])}, {q['unique_sids']} unique SIDs; "
            + (f"failure rate when the target's SID is shared {_pct(tc['failure_rate_collided'])} (n={tc['rows']}),"
               f" unique {_pct(tc['failure_rate_unique'])}" if tc["rows"] else "no evaluated target shares its SID"))
    _footer(ax, note, below=32)
    fig.suptitle(f"SID quality of {report.get('sids')}", fontsize=12, fontweight="bold")
    fig.tight_layout()
    _save(fig, path)


def rank_buckets(dist: dict, top_k: int) -> list[tuple[str, int, bool]]:
    """(label, rows, inside top-k) per rank bucket 1, 2, 3, 4-5, 6-10, 11-20, 21-50, ..., then not in list."""
    n = dist["list_length"]
    edges = sorted({e for e in (1, 2, 3, 5, 10, 20, 50, 100, 200, 500, top_k, n) if e <= n})
    out, lo = [], 1
    for hi in edges:
        rows = sum(dist["by_rank"][str(r)] for r in range(lo, hi + 1))
        out.append((str(lo) if lo == hi else f"{lo}-{hi}", rows, hi <= top_k))
        lo = hi + 1
    out.append((f"not in list\n(> {n})", dist["not_in_list"], False))
    return out


def plot_rank_distribution(report: dict, path: Path) -> None:
    plt = _plt()
    dist = report["rank_distribution"]
    buckets = rank_buckets(dist, report["top_k"])
    total = dist["rows"]
    fig, ax = plt.subplots(figsize=(10, 5))
    b = ax.bar([lab for lab, _, _ in buckets], [v for _, v, _ in buckets],
               color=[OK_COLOR if hit else FAIL_COLOR for _, _, hit in buckets])
    _bar_labels(ax, b, [f"{v}\n({_pct(v / total)})" for _, v, _ in buckets], fontsize=9)
    ax.set_ylim(0, max(v for _, v, _ in buckets) * 1.18 + 1)
    ax.set_xlabel("rank of the target in the predicted list (1 = top)")
    ax.set_ylabel("rows")
    _legend(ax, [(f"hit (rank <= {report['top_k']})", OK_COLOR), ("failure", FAIL_COLOR)], loc="upper left")
    ax.set_title("Where the target lands in the ranked list")
    _footer(ax, _subtitle(report), below=52)
    _save(fig, path)


def write_plots(report: dict, folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fn in (("failure_patterns", plot_failure_patterns), ("failure_rate", plot_failure_rate),
                     ("sid_quality", plot_sid_quality), ("rank_distribution", plot_rank_distribution)):
        p = folder / f"{name}.png"
        fn(report, p)
        paths.append(p)
    return paths


# ---------------------------------------------------------------------------------------------------- text
def lift_ci_text(p: dict) -> str:
    ci = p.get("lift_ci95")
    return "" if not ci else f"95% CI {ci[0]:.2f}-{ci[1]:.2f}"


def category_text(p: dict) -> str:
    """Where category_mismatch's categories came from: 'items level 0', 'sid (first 1 code(s))' or 'none'."""
    src = p.get("category_source")
    if src == "items" and p.get("category_level") is not None:
        return f"items.categories level {p['category_level']}"
    if src == "sid" and p.get("sid_category_levels"):
        return f"sid (first {p['sid_category_levels']} code(s))"
    return str(src)


def summary_text(report: dict) -> str:
    ds = report["dataset"]
    lines = [
        "sidrec bad-case analysis",
        "========================",
        f"evaluation : {report.get('eval')}",
        f"model      : {report.get('model')}",
        f"dataset    : {ds['name']} ({ds['num_items']} items), split {ds['split']}, {ds['num_rows']} rows, "
        f"targets sha256 {ds['targets_sha256']}",
        f"SIDs       : {report.get('sids') or '-'}",
        "",
        f"failure = target not in the top {report['top_k']}",
        f"rows {report['num_rows']}: {report['failures']} failures, {report['successes']} successes, "
        f"failure rate {_pct(report['failure_rate'])}",
        "",
        f"{'pattern':<18} {'rows':>6} {'in fails':>16} {'in successes':>16} {'lift':>6} {'P(fail|pat)':>11} "
        f"{'P(fail|not)':>11}  lift interval",
    ]
    for name, p in report["patterns"].items():
        if not p["available"]:
            lines.append(f"{name:<18} unavailable: {p.get('reason', '')}")
            continue
        f, s = p["failures"], p["successes"]
        lift = "n/a" if p["lift"] is None else f"{p['lift']:.2f}"
        lines.append(f"{name:<18} {p['rows_with_pattern']:>6} {_pct(f['rate']):>7} {f['with_pattern']:>8} "
                     f"{_pct(s['rate']):>7} {s['with_pattern']:>8} {lift:>6} {_pct(p['failure_rate_with']):>11} "
                     f"{_pct(p['failure_rate_without']):>11}  {lift_ci_text(p)}")
    pl = report["patterns"]
    lines += ["",
              f"long_tail threshold: train count <= {pl['long_tail'].get('threshold_count')} "
              f"({_pct(pl['long_tail'].get('tail_items_share'))} of items)",
              f"category source: {category_text(pl['category_mismatch'])}; recency similarity: "
              f"{pl['recency_bias'].get('similarity')}",
              "", "rank distribution (1-based rank of the target):"]
    for lab, rows, hit in rank_buckets(report["rank_distribution"], report["top_k"]):
        lab = lab.replace("\n", " ")
        lines.append(f"  {lab:<22} {rows:>6}  {_pct(rows / report['num_rows']):>6}{'  (hit)' if hit else ''}")
    q = report.get("sid_quality")
    if q:
        lines += ["", f"SID quality: {q['num_items']} items, {q['unique_sids']} unique SIDs, collision rate "
                      f"{_pct(q['collision_rate'])}, {q['collided_items']} items in {q['collision_groups']} shared "
                      f"SIDs, at most {q['max_items_per_sid']} per SID"]
        for lv, ipc in zip(q["per_level"], q["items_per_code"]):
            lines.append(f"  level {lv['level']}: {lv['used']}/{lv['codebook']} codes used, entropy {lv['entropy']};"
                         f" {ipc['prefixes']} prefixes up to this level, items per prefix mean {ipc['mean']} "
                         f"max {ipc['max']} min {ipc['min']}")
        tc = q["target_collided"]
        lines.append(f"  failure rate when the target's SID is shared: {_pct(tc['failure_rate_collided'])} "
                     f"({tc['rows']} rows), unique: {_pct(tc['failure_rate_unique'])}")
    lines += ["", "definitions:"] + [f"  {k}: {v}" for k, v in report.get("definitions", {}).items()]
    return "\n".join(lines) + "\n"
