"""`sidrec sft` and `sidrec eval`: the generative recommender."""

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from sidrec.cli.app import app

console = Console()
ALLOW_MISMATCH_HELP = ("Use the model even with SIDs or a dataset other than those it was trained with "
                       "(sidrec_binding.json); a warning instead of an error.")


@app.command("sft")
def sft_cmd(
    data: Path = typer.Option(..., help="Canonical dataset folder."),
    sids: Path = typer.Option(..., help="SID folder (index.json) or index.json file."),
    out: Path = typer.Option(..., help="Run folder: model/, checkpoints/, train_log.json, manifest.json."),
    config: Optional[Path] = typer.Option(None, help="YAML config (section `sft`), e.g. configs/cpu.yaml."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a key, e.g. sft.epochs=2."),
):
    """Supervised fine-tuning of a causal LM on SID tasks (resumes from OUT/checkpoints when present)."""
    from sidrec.config import load_config
    from sidrec.train.config import SftConfig

    cfg = load_config(SftConfig, config, set_, section="sft")  # before torch is imported

    from sidrec.train.sft import run_sft

    model_dir = run_sft(cfg, data, sids, out)
    console.print(f"model saved to {model_dir}")


@app.command("eval")
def eval_cmd(
    model: Path = typer.Option(..., help="HF model folder (from `sidrec sft` or `sidrec rl`)."),
    data: Path = typer.Option(..., help="Canonical dataset folder."),
    sids: Optional[Path] = typer.Option(None, help="SID folder (index.json) the model was trained with (default: the "
                                                   "one its sidrec_binding.json records)."),
    out: Path = typer.Option(..., help="Evaluation folder: results.json, predictions.jsonl."),
    beams: int = typer.Option(50, help="Beam width = number of ranked SIDs per row."),
    split: str = typer.Option("test", help="train, valid or test."),
    batch_size: int = typer.Option(32, help="Prompts per beam-search batch."),
    cutoff_len: int = typer.Option(256, help="Longest prompt in tokens (oldest history items dropped first)."),
    dtype: str = typer.Option("fp32", help="fp32, bf16 or fp16."),
    max_rows: Optional[int] = typer.Option(None, help="Evaluate only the first N rows (smoke tests)."),
    rerank: Optional[List[Path]] = typer.Option(None, help="SASRec run folder(s): also write OUT/rerank, the beams "
                                                "re-ranked by log-likelihood + λ·z(SASRec logit) (`sidrec rerank`)."),
    rerank_weight: str = typer.Option("auto", help="λ >= 0, or auto: picked on valid (runs the valid split too)."),
    allow_mismatch: bool = typer.Option(False, "--allow-mismatch", help=ALLOW_MISMATCH_HELP),
):
    """Constrained beam search over the catalogue; HR/NDCG@K on exact items (+ SID-match figures)."""
    from sidrec.config import check_options
    from sidrec.pipeline import EvalConfig

    opts = check_options(EvalConfig, beams=beams, split=split, batch_size=batch_size, cutoff_len=cutoff_len,
                         dtype=dtype, max_rows=max_rows)  # before any model is loaded
    from sidrec.model.binding import recorded_sids

    sids = sids or recorded_sids(model)
    if rerank:
        from sidrec.cli.rerank import check_scorer_early, parse_weight
        from sidrec.errors import SidrecError

        rerank_weight = parse_weight(rerank_weight)
        if rerank_weight == "auto" and split == "valid":
            raise SidrecError("--rerank-weight auto picks λ on valid; evaluate --split test (or give a fixed λ)")
        check_scorer_early(rerank, data, sids)

    from sidrec.evaluate.generative import evaluate_generative, process_state
    from sidrec.evaluate.report import print_results

    res = evaluate_generative(model, data, sids, out, **opts.model_dump(), allow_mismatch=allow_mismatch)
    main = process_state().is_main_process  # under `accelerate launch` all processes rank, the main one reports
    if main:
        print_results({str(model): res}, console, title=f"{split} metrics (exact items)")
        if "metrics_sid_match" in res:
            print_results({str(model): {**res, "metrics": res["metrics_sid_match"]}}, console,
                          title=f"{split} metrics (SID match, the paper's scoring)")
        console.print(f"valid SIDs: {res['valid_sid_rate']:.2%}; {res['rows_per_second']} rows/s; outputs in {out}")
    if rerank:
        from sidrec.cli.rerank import rerank_after_eval

        valid_eval = None
        if rerank_weight == "auto":  # λ is picked on valid with the same model: rank the valid split too
            valid_eval = out / "valid"
            evaluate_generative(model, data, sids, valid_eval, **{**opts.model_dump(), "split": "valid"},
                                allow_mismatch=allow_mismatch)
        if main:
            rerank_after_eval(out, data, sids, rerank, rerank_weight, valid_eval)


@app.command("rl")
def rl_cmd(
    model: Path = typer.Option(..., help="SFT model folder (`sidrec sft` OUT/model)."),
    data: Path = typer.Option(..., help="Canonical dataset folder."),
    sids: Path = typer.Option(..., help="SID folder (index.json) the SFT model was trained with."),
    out: Path = typer.Option(..., help="Run folder: model/, checkpoints/, valid_history.json, manifest.json."),
    config: Optional[Path] = typer.Option(None, help="YAML config (section `rl`), e.g. configs/rl-cpu.yaml."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a key, e.g. rl.beta=0.01."),
    allow_mismatch: bool = typer.Option(False, "--allow-mismatch", help=ALLOW_MISMATCH_HELP),
):
    """GRPO over constrained-beam groups with ranking-aware rewards (resumes from OUT/checkpoints when present)."""
    from sidrec.config import load_config
    from sidrec.train.config import RlConfig

    cfg = load_config(RlConfig, config, set_, section="rl")  # before torch is imported

    from sidrec.train.rl import run_rl

    model_dir = run_rl(cfg, model, data, sids, out, allow_mismatch=allow_mismatch)
    console.print(f"model saved to {model_dir}")


@app.command("update")
def update_cmd(
    model: Path = typer.Option(..., help="Trained model folder (`sidrec sft`, `update` or `rl` OUT/model)."),
    data: Path = typer.Option(..., help="The later slice: a dataset whose catalogue extends the model's "
                                        "(`sidrec data split-time`)."),
    sids: Path = typer.Option(..., help="SIDs of the grown catalogue, assigned from the model's "
                                        "(`sidrec sid assign`)."),
    out: Path = typer.Option(..., help="Run folder: model/, checkpoints/, train_log.json, manifest.json."),
    config: Optional[Path] = typer.Option(None, help="YAML config (section `update`)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a key, e.g. update.replay_fraction=0.3."),
):
    """Continue a trained model on a later slice: its rows, the new items' alignment, a replay of old examples."""
    from sidrec.config import load_config
    from sidrec.train.config import UpdateConfig

    cfg = load_config(UpdateConfig, config, set_, section="update")  # before torch is imported

    from sidrec.train.update import run_update

    model_dir = run_update(cfg, model, data, sids, out)
    console.print(f"model saved to {model_dir}")
