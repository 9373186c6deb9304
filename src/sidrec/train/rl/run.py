"""`run_rl`: the RL stage, wiring the parts of this package together."""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path

import torch

from sidrec.data.canonical import Dataset
from sidrec.errors import SidrecError
from sidrec.io import write_json, write_manifest
from sidrec.tasks.builders import check_sid_coverage
from sidrec.train.checkpoints import train_resuming
from sidrec.train.config import RlConfig, check_tracker
from sidrec.train.distributed import accumulation_steps
from sidrec.train.rewards import check_rewards, recent_popularity
from sidrec.train.rl.prompts import prompt_dataset, prompt_frame, training_rows
from sidrec.train.rl.rollout import GroupRollout, make_reward_funcs


def check_settings(cfg: RlConfig) -> None:
    """Every check on the settings alone, so that a bad combination fails before anything loads."""
    check_rewards(cfg.rewards, cfg.scorer, labelled=cfg.prompts == "rows")
    check_tracker(cfg.report_to, "rl.report_to")
    if cfg.extend_prompts and cfg.prompts != "after_train":
        raise SidrecError("extend_prompts continues the after_train histories; set rl.prompts: after_train")
    if cfg.suffix_prompts and not cfg.extend_prompts:
        raise SidrecError("suffix_prompts cuts the continued histories of extend_prompts; set rl.extend_prompts >= 1")
    if cfg.prompts == "after_train" and cfg.add_target:
        raise SidrecError("add_target applies to prompts: rows; after_train prompts have no target")
    if cfg.loss == "tilted" and cfg.beta <= 0:
        raise SidrecError("rl.loss: tilted needs beta > 0: the group's target is pi_ref * exp(advantage / beta)")
    accumulation_steps(cfg.train_batch_size, cfg.micro_batch_size, ("train_batch_size", "micro_batch_size"),
                       group=cfg.num_generations)  # under accelerate launch: each process's share, whole groups


def load_reward_scorer(cfg: RlConfig):
    """The SASRec scorer of the `collaborative` reward (None without it)."""
    if not cfg.rewards.get("collaborative"):
        return None
    from sidrec.baselines.sasrec import load_scorer

    scorer = load_scorer(cfg.scorer)
    if cfg.prompts == "rows" and not getattr(scorer, "needs_users", False) and scorer.config.get("folds", 1) == 1:
        print("[rl] note: the collaborative scorer was trained on the training rows it will score, so it mostly "
              "recalls their targets; cross-fitted scorers (rl.scorer={0: ..., 1: ...}, sasrec.folds) avoid that")
    return scorer


def run_rl(cfg: RlConfig, model_dir: str | Path, data_dir: str | Path, sids: str | Path, out: str | Path,
           allow_mismatch: bool = False) -> Path:
    """`allow_mismatch`: start even if the SFT model was trained with other SIDs or another dataset."""
    from sidrec.decode.inference import load_for_inference, load_model_for_inference
    from sidrec.model.backbone import check_context_length
    from sidrec.train.logs import log_progress
    from sidrec.sid.io import load_sids
    from sidrec.train.rl.trainer import (GroupRolloutTrainer, ValidRanking, grpo_args, lora_config, save_final,
                                         valid_ranking, valid_rows)

    t0, out = time.time(), Path(out)
    (out / "manifest.json").unlink(missing_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    check_settings(cfg)  # every check that can fail runs before any training starts
    scorer = load_reward_scorer(cfg)
    dataset = Dataset.load(data_dir)
    codes, _ = load_sids(sids)
    check_sid_coverage(dataset, codes)
    if scorer is not None and scorer.num_items != dataset.num_items:
        raise SidrecError(f"{cfg.scorer}: SASRec scores {scorer.num_items} items, the dataset has {dataset.num_items}")
    bound = load_for_inference(model_dir, sids, data_dir, dtype="bf16" if cfg.bf16 else "fp32",
                               allow_mismatch=allow_mismatch)  # refuses SIDs the SFT model was not trained with
    tokenizer, model, trie = bound.tokenizer, bound.model, bound.trie
    check_context_length(model, cfg.cutoff_len, "rl.cutoff_len")
    bound_to = (codes, sids, data_dir)  # what the saved models are bound to
    if cfg.num_generations > trie.num_sids:
        raise SidrecError(f"num_generations={cfg.num_generations} is larger than the catalogue's {trie.num_sids} SIDs")

    completion_len = codes.shape[1] + 1  # the SID tokens and EOS
    prompt_len = cfg.cutoff_len - completion_len
    train_df = dataset.splits["train"]
    prompt_df = prompt_frame(cfg, train_df, dataset.max_history, model, tokenizer, trie, codes, prompt_len)
    train = prompt_dataset(prompt_df, training_rows(prompt_df, cfg), codes, tokenizer, prompt_len)
    item_prior = recent_popularity(train_df["target"], dataset.num_items, cfg.popularity_window)
    reward_funcs, reward_weights = make_reward_funcs(cfg, trie, codes, scorer, item_prior)
    args, eval_every = grpo_args(cfg, out, len(train), reward_weights, completion_len)
    tilt_ref = None
    if cfg.loss == "tilted":  # the frozen SFT model the tilt starts from
        tilt_ref = load_model_for_inference(model_dir, dtype="bf16" if cfg.bf16 else "fp32")[1].requires_grad_(False)
    trainer = GroupRolloutTrainer(
        rl=cfg, sid_len=codes.shape[1], tilt_ref=tilt_ref, model=model, args=args, reward_funcs=reward_funcs,
        train_dataset=train, processing_class=tokenizer, peft_config=lora_config(cfg),
        rollout_func=GroupRollout(cfg, tokenizer, trie, trie.sid_of_item(dataset.num_items)))
    histories, targets = valid_rows(dataset.splits["valid"], cfg.max_valid_rows, cfg.seed)
    measure = partial(valid_ranking, tokenizer=tokenizer, trie=trie, codes=codes, histories=histories,
                      targets=targets, beams=cfg.eval_beams, cutoff_len=cfg.cutoff_len)
    valid = ValidRanking(trainer, tokenizer, measure, out, eval_every, cfg.keep_best, bound_to)
    trainer.add_callback(valid)
    log_progress(trainer)
    last = train_resuming(trainer, "rl")  # from the newest whole checkpoint; a full disk is a one-line error
    if not trainer.is_world_process_zero():  # under accelerate launch one process measures and saves the run
        return out / "model"

    model_out = save_final(trainer, tokenizer, cfg, out, bound_to)
    best = max(valid.history, key=lambda h: h["NDCG@10"])
    write_json(out / "train_log.json", list(trainer.state.log_history))
    write_manifest(out, "rl", config=cfg.model_dump(), inputs={"model": model_dir, "data": data_dir, "sids": sids},
                   seconds=time.time() - t0,
                   extra={"resumed_from": last, "global_step": trainer.state.global_step,
                          "num_train_prompts": len(train), "valid_history": valid.history,
                          "saved_model_step": best["step"] if cfg.keep_best else trainer.state.global_step})
    return model_out
