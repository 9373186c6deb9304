#!/usr/bin/env python3
"""Recommendation-oriented RL (GRPO) on an SFT model: `sidrec rl --set rl.KEY=VALUE ...` (MiniOneRec: rl.py).

    python scripts/rl.py --model_path ./outputs/sft_0.5b_Industrial_and_Scientific_xxx \\
        --train_batch_size 32 --num_train_epochs 1 --sample_train True --sample_size 10000 \\
        --reward_type ranking --num_generations 16 --eval_step 0.1 [--category C] [--data DIR] [--output_dir DIR]

Flag -> setting: --train_batch_size -> rl.micro_batch_size (completions per forward/backward, MiniOneRec's
per-device batch) and, times --gradient_accumulation_steps and the processes (WORLD_SIZE, set by torchrun or
accelerate launch), rl.train_batch_size (completions per optimiser step, over all processes);
--num_train_epochs -> rl.epochs; --sample_train/--sample_size -> rl.sample_train/rl.sample_size; --num_generations
-> rl.num_generations (the group); --eval_step -> rl.eval_step; --learning_rate, --beta, --seed, --report_to ->
rl.<same>; --beam_search False -> rl.rollout=sample; --add_gt -> rl.add_target; --reward_type -> rl.rewards:
  rule          {rule: 1}                  1 for the target, else 0
  ranking       {rule: 1, ranking: 1}      the paper's default: rule + MiniOneRec's rank-aware penalty
  ranking_only  {ranking: 1}
  sasrec        {collaborative: 1}         a trained SASRec's score; needs --cf_path (a `sidrec baseline sasrec` run)
  prefix        {prefix: 1}                sidrec's dense reward: shared leading SID levels with the target
Flags not given keep the config's values (--config, default: configs/rl-cpu.yaml, MiniOneRec's GRPO recipe; sidrec's
own RL defaults, the tilted recipe, need a SASRec scorer: --config configs/rl-tilted-cpu.yaml). Unknown flags (e.g.
--set rl.eval_beams=20) go to `sidrec rl` as they are.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from _common import REPO, die, exec_sidrec, full_category, model_dir, note, run_label, str2bool

REWARD_NAMES = ("rule", "ranking", "prefix", "collaborative", "diversity")
REWARD_TYPES = {
    "rule": {"rule": 1.0},
    "ranking": {"rule": 1.0, "ranking": 1.0},
    "ranking_only": {"ranking": 1.0},
    "sasrec": {"collaborative": 1.0},
    "prefix": {"prefix": 1.0},
}
# MiniOneRec flags with no sidrec counterpart: accepted so that its command lines run, and reported
IGNORED = {
    "eval_batch_size": "evaluation batches are sized by sidrec",
    "train_file": "sidrec reads the splits from --data",
    "eval_file": "sidrec reads the splits from --data",
    "info_file": "sidrec builds the catalogue from --data and --sids",
    "item_meta_path": "sidrec reads items from --data",
    "temperature": "beam rollouts do not sample; sampled rollouts use temperature 1",
    "mask_all_zero": "not implemented",
    "dynamic_sampling": "not implemented",
    "sync_ref_model": "the reference model is the frozen SFT model",
    "test_during_training": "valid HR/NDCG is measured every eval_step",
    "dapo": "not implemented (GRPO loss)",
    "gspo": "not implemented (GRPO loss)",
    "wandb_project": "use --report_to",
    "wandb_run_name": "use --report_to",
    "ada_path": "the `semantic` reward is not implemented",
}


def rewards_override(reward_type: str) -> str:
    """Every reward named, unused ones at 0, so the config file's own reward weights cannot leak in."""
    weights = REWARD_TYPES[reward_type]
    body = ", ".join(f"{name}: {weights.get(name, 0.0)}" for name in REWARD_NAMES)
    return "rl.rewards={" + body + "}"


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--model_path", required=True, help="SFT run folder (or its model/ folder)")
    p.add_argument("--category", default="Industrial_and_Scientific")
    p.add_argument("--data_root", default="./data/Amazon18", help="holds one canonical dataset per category")
    p.add_argument("--data", help="canonical dataset folder (default DATA_ROOT/CATEGORY)")
    p.add_argument("--sids", "--sid_index_path", dest="sids", help="SID folder or index.json (default DATA/sids)")
    p.add_argument("--output_dir", help="RL run folder (default ./outputs/rl_<SFT run name>; reuse it to resume)")
    p.add_argument("--config", default=str(REPO / "configs" / "rl-cpu.yaml"),
                   help="YAML with an `rl:` section (default: configs/rl-cpu.yaml, MiniOneRec's GRPO recipe)")
    p.add_argument("--train_batch_size", type=int, help="completions per forward/backward")
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--num_train_epochs", type=float)
    p.add_argument("--sample_train", type=str2bool)
    p.add_argument("--sample_size", type=int)
    p.add_argument("--reward_type", choices=sorted(REWARD_TYPES))
    p.add_argument("--cf_path", "--scorer", dest="cf_path", help="SASRec run folder for --reward_type sasrec")
    p.add_argument("--num_generations", type=int)
    p.add_argument("--eval_step", type=float)
    p.add_argument("--learning_rate", type=float)
    p.add_argument("--beta", type=float)
    p.add_argument("--beam_search", type=str2bool, help="False: constrained sampling instead of beam groups")
    p.add_argument("--add_gt", type=str2bool, help="put the target into groups that miss it")
    p.add_argument("--seed", type=int)
    p.add_argument("--report_to", choices=["none", "tensorboard", "swanlab", "wandb"])
    for flag in IGNORED:
        p.add_argument(f"--{flag}", help=argparse.SUPPRESS)
    return p.parse_known_args(argv)


def build_command(args, extra: list[str]) -> list[str]:
    category = full_category(args.category)
    data = Path(args.data) if args.data else Path(args.data_root) / category
    sids = Path(args.sids) if args.sids else data / "sids"
    model = model_dir(args.model_path)
    if not (model / "config.json").is_file():
        die(f"{args.model_path}: no model there (expected a `sidrec sft` run folder or its model/ folder)")
    out = args.output_dir or str(Path("outputs") / f"rl_{run_label(args.model_path)}")
    for flag, why in IGNORED.items():
        if getattr(args, flag) is not None:
            note(f"--{flag} ignored: {why}")
    if args.reward_type == "sasrec" and not args.cf_path:
        die("--reward_type sasrec needs --cf_path: a SASRec run folder "
            "(`sidrec baseline sasrec --data DATA --out DIR`, then --cf_path DIR)")
    if args.cf_path and args.reward_type not in (None, "sasrec"):
        note(f"--cf_path is only used by --reward_type sasrec, not {args.reward_type}")

    sets: list[str] = []
    if args.train_batch_size is not None:
        # MiniOneRec's batch is per process; rl.train_batch_size is the global one (over all processes)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        sets += [f"rl.micro_batch_size={args.train_batch_size}",
                 f"rl.train_batch_size={args.train_batch_size * args.gradient_accumulation_steps * world}"]
    elif args.gradient_accumulation_steps != 1:
        die("--gradient_accumulation_steps needs --train_batch_size")
    simple = {"num_train_epochs": "epochs", "sample_train": "sample_train", "sample_size": "sample_size",
              "num_generations": "num_generations", "eval_step": "eval_step", "learning_rate": "learning_rate",
              "beta": "beta", "add_gt": "add_target", "seed": "seed", "report_to": "report_to"}
    for flag, key in simple.items():
        value = getattr(args, flag)
        if value is not None:
            sets.append(f"rl.{key}={str(value).lower() if isinstance(value, bool) else value}")
    if args.beam_search is not None:
        sets.append(f"rl.rollout={'beam' if args.beam_search else 'sample'}")
    if args.reward_type is not None:
        sets.append(rewards_override(args.reward_type))
    if args.reward_type == "sasrec":
        sets.append(f"rl.scorer={args.cf_path}")

    cmd = ["rl", "--model", str(model), "--data", str(data), "--sids", str(sids), "--out", out]
    if args.config:
        cmd += ["--config", args.config]
    for s in sets:
        cmd += ["--set", s]
    return cmd + extra


def main() -> None:
    args, extra = parse()
    cmd = build_command(args, extra)
    print(f"model -> {cmd[cmd.index('--out') + 1]}/model", flush=True)
    exec_sidrec(cmd)


if __name__ == "__main__":
    main()
