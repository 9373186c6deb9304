"""Cost of one tilted-RL step: `sidrec rl` with `configs/rl-tilted-cpu.yaml` for a fixed number of optimiser steps.

Each step draws 16 prompts x G = 32 constrained-beam completions, scores them, computes the reference model's
log-likelihoods and takes one AdamW step on the tilted loss: the unit the recipe's 36-40 min is made of (3,517
steps on Industrial). The recipe's prompt set (continuations and suffixes drawn from the model's beams) and its
SASRec ensemble are left out: the prompts are a seeded sample of the users' end-of-training histories, and the
rewards are the recipe's target-free ones (novelty 1, popularity .3), plus collaborative 1.5 when --scorer is given.
Valid ranking runs at the start and the end only, on 50 rows.

    .venv/bin/python bench/rl_step.py --quick          # 50 steps of the benchmark fixture's 2-layer model
    .venv/bin/python bench/rl_step.py --model runs/demo/sft/model --sids runs/demo/sid --data runs/demo/dataset \
        --steps 50 --threads 2 --scorer runs/sasrec_seed42,runs/sasrec_seed2,runs/sasrec_seed3

Reports seconds per step (mean of the trainer's per-step times) and completions per second.
Writes bench/out/rl_step.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time

import numpy as np

from _common import OUT, ROOT, machine, model_args
from sidrec.config import load_config
from sidrec.io import read_json, write_json
from sidrec.train.config import RlConfig
from sidrec.train.rl import run_rl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="SFT model folder (default: the benchmark fixture's)")
    ap.add_argument("--sids", default=None, help="SIDs of the model (default: the fixture's)")
    ap.add_argument("--data", default=None, help="canonical dataset (default: the fixture's)")
    ap.add_argument("--config", default=str(ROOT / "configs" / "rl-tilted-cpu.yaml"))
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--scorer", default=None, help="SASRec run folder(s), comma-separated: adds collaborative 1.5")
    ap.add_argument("--quick", action="store_true", help="50 steps")
    ap.add_argument("--out", default=str(OUT / "rl_step.json"))
    args = ap.parse_args()
    if args.quick:
        args.steps = 50
    model_args(args)
    base = load_config(RlConfig, args.config, section="rl")
    prompts_per_step = base.train_batch_size // base.num_generations
    rewards = {"novelty": base.rewards.get("novelty", 1.0), "popularity": base.rewards.get("popularity", 0.3)}
    scorer = args.scorer.split(",") if args.scorer else None
    if scorer:
        rewards = {"collaborative": base.rewards.get("collaborative", 1.5), **rewards}
    cfg = base.model_copy(update={
        "rewards": rewards, "scorer": scorer, "extend_prompts": 0, "suffix_prompts": 0, "sample_train": True,
        "sample_size": args.steps * prompts_per_step, "epochs": 1.0, "eval_step": args.steps,
        "max_valid_rows": 50, "threads": args.threads})
    work = OUT / "rl_step_run"
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.time()
    run_rl(cfg, args.model, args.data, args.sids, work)
    wall = time.time() - t0
    log = read_json(work / "train_log.json")
    step_times = [e["step_time"] for e in log if "step_time" in e]
    summary = next((e for e in log if "train_runtime" in e), {})
    steps = int(summary.get("step", 0)) or args.steps
    per_step = float(np.mean(step_times)) if step_times else summary.get("train_runtime", wall) / steps
    report = {"bench": "rl_step", "model": args.model, "data": args.data, "config": args.config,
              "steps": steps, "prompts_per_step": prompts_per_step, "group": cfg.num_generations,
              "completions_per_step": cfg.train_batch_size, "loss": cfg.loss, "rewards": rewards,
              "threads": args.threads, "seconds_per_step": per_step,
              "completions_per_s": cfg.train_batch_size / per_step,
              "train_runtime_s": summary.get("train_runtime"), "wall_s": wall, "machine": machine()}
    write_json(args.out, report)
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({k: report[k] for k in ("steps", "seconds_per_step", "completions_per_s", "wall_s")}))


if __name__ == "__main__":
    main()
