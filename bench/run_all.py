"""The benchmark suite: every product benchmark in bench/, one after another, into one JSON and one markdown table.

    make bench               # full sizes (on runs/demo's models when `make demo` has made them)
    make bench QUICK=1       # quick modes on the benchmark fixture: under 15 minutes on 2 cores
    python bench/run_all.py [--quick] [--only NAME,NAME] [--data DIR]

First builds (or reuses) the benchmark fixture (bench/_common.py: the smoke pipeline on the real data), then runs
each benchmark as its own process with one thread, so one failure does not stop the rest. Writes
bench/out/results.json (date, machine, command, per benchmark: its command, seconds, exit code, figures and the path
of its own JSON) and bench/out/results.md (the same as a table); each benchmark's log goes to bench/out/logs/.
Exits 1 if any benchmark failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import OUT, ROOT, fixture, load_avg, machine
from sidrec.io import write_json, write_text

DEMO = ROOT / "runs" / "demo"


def _f(x, digits=1):
    return "–" if x is None else f"{x:.{digits}f}"


def sid_figures(r: dict) -> str:
    rows = []
    for name, m in r["methods"].items():
        rows.append(f"{name}: {m['seconds_median']} s/build, collisions {m['collision_groups_before']}→"
                    f"{m['collision_groups_after']}, entropy {'/'.join(f'{e:.3f}' for e in m['entropy'])}, "
                    f"deterministic {'yes' if m['deterministic'] else 'no'}")
    return "; ".join(rows)


def sasrec_figures(r: dict) -> str:
    run = r["runs"][0]
    return (f"test HR@10 {run['metrics']['HR@10']:.4f} / NDCG@10 {run['metrics']['NDCG@10']:.4f} after "
            f"{run['epochs_run']} epochs, {run['minutes']:.2f} min per run"
            + ("" if r.get("quick") else f"; bar {'met' if r['all_passed'] else 'not met'}"))


def beam_figures(r: dict) -> str:
    return (f"{r['rows']} rows, beam {r['beams']}: sidrec {r['sidrec_rows_per_s']:.1f} rows/s, HF generate + "
            f"dict processor {r['hf_dict_processor_rows_per_s']:.1f} rows/s ({r['speed_ratio']:.1f}×); "
            f"top-10 same set {r['top10_same_set']:.0%}")


def backend_figures(r: dict) -> str:
    return f"{r['rows']} rows, beam {r['beams']}: " + "; ".join(
        f"{n} {b['rows_per_s']:.1f} rows/s ({b['speed_vs_fp32']:.2f}×), ΔNDCG@10 {b['delta_NDCG@10']:+.4f}"
        for n, b in r["backends"].items())


def serve_figures(r: dict) -> str:
    parts = [f"max batch {k.split('_')[-1]}: {s['requests_per_s']:.1f} req/s, p50 {_f(s['p50_ms'], 0)} ms, "
             f"p99 {_f(s['p99_ms'], 0)} ms, {s['errors']} errors" for k, s in r["settings"].items()]
    if "throughput_ratio" in r:
        parts.append(f"batching {r['throughput_ratio']:.2f}× throughput")
    return f"{r['requests_per_setting']} requests per setting: " + "; ".join(parts)


def ab_figures(r: dict) -> str:
    share = ", ".join(f"{n} {s['rows']:.1%}" for n, s in r["share"].items())
    return (f"{r['rows']} rows over HTTP, {r['replay']['errors']} errors, {r['replay']['requests_per_s']:.1f} req/s; "
            f"report vs offline: max abs difference {r['max_abs_diff']:.4f}; rows {share}")


def rl_figures(r: dict) -> str:
    return (f"{r['steps']} steps of {r['prompts_per_step']} prompts × G {r['group']}: {r['seconds_per_step']:.3f} "
            f"s/step, {r['completions_per_s']:.0f} completions/s ({r['threads']} thread)")


def scale_figures(r: dict) -> str:
    from scale import figure

    return "; ".join(f"{x['stage']} {x['size']:,}: {x['seconds']:.1f} s, {x['peak_rss_mb']:,} MiB, {figure(x)}"
                     if x["ok"] else f"{x['stage']} {x['size']:,}: {figure(x)}" for x in r["rows"])


def gpu_figures(r: dict) -> str:
    s, e, rl = r["sft"], r["eval"], r["rl"]
    peak = "–" if s["peak_memory_gib"] is None else f"{s['peak_memory_gib']:.1f} GiB"
    return (f"{r['device']}: SFT {s['tokens_per_s']:.0f} tokens/s, peak {peak}; eval beam {e['beams']} "
            f"{e['rows_per_s']:.1f} rows/s; RL {rl['seconds_per_step']:.2f} s/step")


# name, script, its JSON under bench/out, figures, which trained models it takes (None: data only)
BENCHES = [
    ("sid_methods", "sid_methods.py", "sid_methods.json", sid_figures, None),
    ("sasrec", "sasrec_industrial.py", "sasrec_industrial.json", sasrec_figures, None),
    ("beam_search", "beam_search.py", "beam_search.json", beam_figures, "sft"),
    ("inference_backends", "inference_backends.py", "inference_backends.json", backend_figures, "sft"),
    ("serve_load", "serve_load.py", "serve_load.json", serve_figures, "sft"),
    ("ab_replay", "ab_replay.py", "ab_replay.json", ab_figures, "ab"),
    ("rl_step", "rl_step.py", "rl_step.json", rl_figures, "sft"),
    ("scale", "scale.py", "scale.json", scale_figures, None),
    ("gpu", "gpu.py", "gpu.json", gpu_figures, None),
]
NEEDS_CUDA = {"gpu"}  # skipped, with a row that says so, on a machine without a CUDA device
NO_QUICK = {"gpu"}  # one size only (~5 minutes on one GPU)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def model_args(kind: str | None, quick: bool) -> list[str]:
    """Full mode measures `make demo`'s models when they exist; otherwise (and in quick mode) the fixture's."""
    if kind is None or quick or not (DEMO / "sft" / "model").exists():
        return []
    common = ["--sids", str(DEMO / "sid"), "--data", str(DEMO / "dataset")]
    if kind == "ab":
        if not (DEMO / "rl" / "model").exists():
            return []
        return ["--a", str(DEMO / "sft" / "model"), "--b", str(DEMO / "rl" / "model"), *common]
    return ["--model", str(DEMO / "sft" / "model"), *common]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", default=os.environ.get("QUICK") in ("1", "true", "yes"))
    ap.add_argument("--only", default=None, help="comma-separated benchmark names")
    ap.add_argument("--data", default=None, help="the data folder for the fixture (default: bench/_common.py's)")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else [b[0] for b in BENCHES]
    unknown = set(names) - {b[0] for b in BENCHES}
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {sorted(unknown)}; known: {', '.join(b[0] for b in BENCHES)}")
    logs = OUT / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    started, load_start, t_all = time.strftime("%Y-%m-%d %H:%M %Z"), load_avg(), time.time()

    t0 = time.time()
    fixture(args.data)
    results = [{"name": "fixture", "command": "bench/_common.py fixture(): sidrec pipeline --config "
                "configs/smoke.yaml --until rl --out bench/out/fixture", "seconds": round(time.time() - t0, 1),
                "rc": 0, "figures": "smoke pipeline on the real data (reused when already built)"}]
    print(f"fixture ready ({results[0]['seconds']} s)", flush=True)
    for name, script, out_json, figures, kind in BENCHES:
        if name not in names:
            continue
        cmd = [sys.executable, str(ROOT / "bench" / script), *(["--quick"] if args.quick and name not in NO_QUICK
                                                                else []), *model_args(kind, args.quick)]
        shown = " ".join(["python", f"bench/{script}", *cmd[2:]]).replace(str(ROOT) + "/", "")
        if name in NEEDS_CUDA and not cuda_available():
            results.append({"name": name, "command": shown, "seconds": 0.0, "rc": 0,
                            "figures": "skipped: no CUDA device on this machine"})
            print(f"[{name}] skipped: no CUDA device on this machine", flush=True)
            continue
        print(f"[{name}] {shown}", flush=True)
        t0 = time.time()
        with open(logs / f"{name}.log", "w") as log:
            rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        row = {"name": name, "command": shown, "seconds": round(time.time() - t0, 1), "rc": rc,
               "load_avg_1min_after": load_avg(), "json": f"bench/out/{out_json}", "log": f"bench/out/logs/{name}.log"}
        try:
            data = json.loads((OUT / out_json).read_text()) if rc == 0 else None
            row["figures"] = figures(data) if data else f"failed (exit {rc}): see {row['log']}"
        except (OSError, KeyError, TypeError, ValueError) as e:
            row["figures"] = f"no figures ({type(e).__name__}: {e}): see {row['log']}"
            row["rc"] = row["rc"] or 1
        results.append(row)
        print(f"[{name}] {row['seconds']} s: {row['figures']}", flush=True)

    command = " ".join(["python bench/run_all.py", *sys.argv[1:]]) + f" (make bench{' QUICK=1' if args.quick else ''})"
    report = {"date": started, "machine": machine(), "command": command, "quick": args.quick,
              "load_avg_1min_start": load_start, "load_avg_1min_end": load_avg(),
              "total_seconds": round(time.time() - t_all, 1), "benchmarks": results}
    write_json(OUT / "results.json", report)
    m = report["machine"]
    lines = [f"`{command}` — {started}; {m['cpu']}, {m['cores']} cores; 1 thread per benchmark; load average "
             f"{load_start} at the start, {report['load_avg_1min_end']} at the end; total "
             f"{report['total_seconds'] / 60:.1f} min" + ("; quick mode: speed and agreement on the fixture's toy "
                                                           "models, not accuracy" if args.quick else ""), "",
             "| benchmark | figures | seconds | command |", "|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['figures'].replace('|', '/')} | {r['seconds']} | `{r['command']}` |" for r in results]
    write_text(OUT / "results.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if any(r["rc"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
