"""`sidrec serve` (the HTTP service, optionally an A/B test) and `sidrec ab-report` (its logged impressions scored)."""

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from sidrec.cli.app import app

console = Console()
ALLOW_MISMATCH_HELP = ("Load a model even with SIDs or a dataset other than those it was trained with "
                       "(sidrec_binding.json); a warning instead of an error.")
DEFAULT_SALT = "sidrec-ab"  # = sidrec.serve.ab.DEFAULT_SALT (not imported here: sidrec.serve imports torch)


@app.command("serve")
def serve_cmd(
    data: Path = typer.Option(..., help="Canonical dataset folder (the catalogue; shared by all variants)."),
    model: Optional[Path] = typer.Option(None, help="Model folder (RUN/model) or run folder: one variant, 'A'."),
    sids: Optional[Path] = typer.Option(None, help="SID folder; default: the one the run's manifest.json records."),
    variant: Optional[List[str]] = typer.Option(
        None, "--variant", help="NAME=RUN_OR_MODEL_DIR or NAME=MODEL_DIR@SIDS_DIR; repeat for an A/B test (instead of --model)."),
    split: Optional[str] = typer.Option(None, "--split", help="Traffic shares of the variants, e.g. 50/50 (default: "
                                                              "equal)."),
    salt: str = typer.Option(DEFAULT_SALT, help="Salt of the user hash; a new salt reshuffles users."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (a non-loopback one is warned about)."),
    allow_host: Optional[List[str]] = typer.Option(
        None, "--allow-host", help="Host header name to accept besides 127.0.0.1, localhost, [::1] and --host; repeat. "
                                   "'*' accepts any (turns off the DNS-rebinding check)."),
    allow_origin: Optional[List[str]] = typer.Option(
        None, "--allow-origin", help="Origin (scheme://host:port) besides the service's own page that may POST; "
                                     "repeat. '*' allows any web page to post impressions."),
    port: int = typer.Option(8000, help="Port to listen on."),
    backend: str = typer.Option("torch", help="torch, int8 or onnx."),
    beams: int = typer.Option(50, help="Beam width: the largest k a request may ask for."),
    cutoff_len: int = typer.Option(256, help="Longest prompt in tokens (oldest history items dropped first)."),
    threads: Optional[int] = typer.Option(None, help="Model threads (torch intra-op, ONNX Runtime)."),
    max_batch: int = typer.Option(32, help="Most requests in one micro-batch (1 = no batching)."),
    max_wait_ms: float = typer.Option(5.0, help="Longest a request waits for others to join its batch."),
    max_history: int = typer.Option(100, help="Longest history a request may send."),
    max_queue: int = typer.Option(4096, help="Queued requests per variant before answering 503."),
    log: Optional[Path] = typer.Option(None, help="Impression log (SQLite); default OUT/impressions.sqlite."),
    no_log: bool = typer.Option(False, "--no-log", help="Do not log impressions."),
    out: Optional[Path] = typer.Option(None, help="Folder for the default impression log (default: the current "
                                                  "folder)."),
    allow_mismatch: bool = typer.Option(False, "--allow-mismatch", help=ALLOW_MISMATCH_HELP),
    rerank: Optional[Path] = typer.Option(None, help="Re-rank every variant's beams as this rerank folder did "
                                                     "(`sidrec rerank --out`, a pipeline's RUN/rerank): its SASRec "
                                                     "scorer and λ; items gain fused_score."),
    rerank_scorer: Optional[List[Path]] = typer.Option(
        None, help="SASRec run folder to re-rank with (repeat to average; with --rerank-weight; not with --rerank)."),
    rerank_weight: Optional[float] = typer.Option(None, help="λ >= 0 of log-likelihood + λ·z(scorer logit) (default "
                                                             "with --rerank: the λ it records)."),
):
    """Serve recommendations over HTTP (POST /recommend, GET /items, GET /healthz, GET / a page), micro-batched."""
    import uvicorn

    from sidrec.errors import SidrecError
    from sidrec.serve.ab import ImpressionLog, parse_split
    from sidrec.serve.app import (ServeSettings, allowed_hosts, bind_warning, create_app, load_variants, parse_variant,
                                  resolve_model)

    if bool(model) == bool(variant):
        raise SidrecError("give either --model (one model) or --variant NAME=DIR (one per variant), not both/neither")
    if rerank and rerank_scorer:
        raise SidrecError("give either --rerank RERANK_FOLDER or --rerank-scorer DIR with --rerank-weight, not both")
    rerank_with = rerank or rerank_scorer or None
    if rerank_with is not None or rerank_weight is not None:
        from sidrec.rerank import resolve_rerank

        if rerank_with is None:
            raise SidrecError("--rerank-weight needs --rerank RERANK_FOLDER or --rerank-scorer SASREC_RUN")
        resolve_rerank(rerank_with, rerank_weight)  # a bad folder or λ fails before any model is loaded
    if variant:
        specs = [parse_variant(v, sids) for v in variant]
    else:
        specs = [("A", *resolve_model(model, sids))]
    names = [s[0] for s in specs]
    if len(set(names)) != len(names):
        raise SidrecError(f"variant names repeat: {names}")
    shares = parse_split(split, len(specs))
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    recs = load_variants(specs, data, backend=backend, beams=beams, cutoff_len=cutoff_len,
                         batch_size=max(max_batch, 1), threads=threads, allow_mismatch=allow_mismatch,
                         rerank=rerank_with, rerank_weight=rerank_weight)
    info = {name: {"model": str(m), "sids": str(s), "backend": backend, "beams": beams,
                   "rerank": getattr(recs[name], "rerank_info", None)} for name, m, s in specs}
    config = {"data": str(data), "variants": info, "shares": dict(zip(names, shares)), "salt": salt}
    log_path = None if no_log else Path(log) if log else Path(out or ".") / "impressions.sqlite"
    impression_log = ImpressionLog(log_path, config=config) if log_path else None
    settings = ServeSettings(max_batch=max_batch, max_wait_ms=max_wait_ms, max_history=max_history,
                             max_queue=max_queue, salt=salt, info={"data": str(data), "variants": info,
                                                                   "log": str(log_path) if log_path else None},
                             allowed_hosts=allowed_hosts(host, allow_host or ()),
                             allowed_origins=list(allow_origin or ()))
    api = create_app(recs, shares=shares, log_to=impression_log, settings=settings, close_log=True)
    split_text = ", ".join(f"{n} {s:.0%}" for n, s in zip(names, shares))
    if rerank_with is not None:
        spec = recs[names[0]].rerank_info
        console.print(f"re-ranking every variant with λ = {spec['weight']:g} and {', '.join(spec['paths'])}",
                      highlight=False)
    console.print(f"serving {split_text} on http://{host}:{port} (max batch {max_batch}, max wait {max_wait_ms} ms; "
                  f"impressions: {log_path or 'not logged'})", highlight=False)
    warning = bind_warning(host, port, settings.allowed_hosts)
    if warning:
        typer.echo(warning, err=True)
    import gc

    # what was loaded (millions of objects for a catalogue of 10^6 items) leaves the collector's full passes, which
    # would otherwise stall every request in flight for ~0.4 s each time one runs
    gc.freeze()
    uvicorn.run(api, host=host, port=port, log_level="warning", access_log=False)  # closes the log on shutdown


@app.command("ab-report")
def ab_report_cmd(
    log: Path = typer.Option(..., help="Impression log written by `sidrec serve`."),
    data: Path = typer.Option(..., help="Canonical dataset folder with the held-out split."),
    split: str = typer.Option("test", help="Split whose rows' next items are the ground truth."),
    k: int = typer.Option(10, help="Cut-off K of HR@K and NDCG@K."),
    ci: str = typer.Option("normal", help="95% intervals: normal (mean ± 1.96 se over rows), bootstrap (rows) "
                                                  "or user-bootstrap (whole users, conservative)."),
    resamples: int = typer.Option(2000, help="Bootstrap resamples (--ci bootstrap, user-bootstrap)."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
    control: Optional[str] = typer.Option(None, help="Variant the others are compared with (default: first name)."),
    out: Optional[Path] = typer.Option(None, help="Report JSON (default: LOG's folder/ab_report.json)."),
):
    """Per-variant HR@K / NDCG@K of logged impressions against the split's next items, with 95% CIs and B−A."""
    from sidrec.io import write_json
    from sidrec.serve.ab import ab_report, print_ab_report

    report = ab_report(log, data, split=split, k=k, ci=ci, control=control, resamples=resamples, seed=seed)
    out = out or Path(log).parent / "ab_report.json"
    write_json(out, report)
    print_ab_report(report, console)
    console.print(f"{report['impressions']} impressions, {report['matched']} matched to {split} rows, "
                  f"{report['unmatched']} unmatched, {report['duplicates']} duplicates; report in {out}",
                  highlight=False)
