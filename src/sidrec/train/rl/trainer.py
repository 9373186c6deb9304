"""TRL's `GRPOTrainer` with our rollout and loss, its settings, the valid-ranking callback and the model saving.

Importing this module imports TRL (seconds); `run_rl` imports it only when training starts.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from sidrec.evaluate.metrics import hr_ndcg, target_ranks
from sidrec.io import write_json
from sidrec.train.config import RlConfig
from sidrec.train.distributed import accumulation_steps
from sidrec.train.rl.losses import shared_prompt_logps, sid_logps, tilt_batch, trl_loss_args


def grpo_args(cfg: RlConfig, out: Path, num_prompts: int, reward_weights: list[float],
              completion_len: int) -> tuple[GRPOConfig, int]:
    """TRL's settings for `cfg`, and the steps between valid evaluations (also the checkpoint interval)."""
    # train_batch_size completions per optimiser step over all processes (TRL's batch is per device)
    accum = accumulation_steps(cfg.train_batch_size, cfg.micro_batch_size, ("train_batch_size", "micro_batch_size"),
                               group=cfg.num_generations)
    prompts_per_step = cfg.train_batch_size // cfg.num_generations
    total_steps = math.ceil(num_prompts * cfg.epochs / prompts_per_step)
    eval_every = max(1, int(cfg.eval_step * total_steps) if cfg.eval_step < 1 else int(cfg.eval_step))
    args = GRPOConfig(
        output_dir=str(out / "checkpoints"), per_device_train_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=accum, num_generations=cfg.num_generations,
        max_completion_length=completion_len, num_train_epochs=cfg.epochs, learning_rate=cfg.learning_rate,
        **trl_loss_args(cfg), reward_weights=reward_weights,
        max_grad_norm=cfg.max_grad_norm, warmup_steps=cfg.warmup_ratio, lr_scheduler_type=cfg.lr_scheduler,
        bf16=cfg.bf16, gradient_checkpointing=cfg.gradient_checkpointing, disable_dropout=True,
        logging_steps=max(1, eval_every // 5), save_strategy="steps", save_steps=eval_every, save_total_limit=2,
        report_to=cfg.report_to, seed=cfg.seed, data_seed=cfg.seed, deepspeed=cfg.deepspeed,
        use_cpu=not torch.cuda.is_available(), dataloader_pin_memory=torch.cuda.is_available(),
        log_completions=False, temperature=1.0, disable_tqdm=False,
    )
    return args, eval_every


def lora_config(cfg: RlConfig):
    if cfg.lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")


class GroupRolloutTrainer(GRPOTrainer):
    """`GRPOTrainer` that (1) hands each batch's rows to the rollout (TRL gives `rollout_func` only the prompt texts),
    (2) with `loss: tilted` replaces the advantages by the tilted ones against `tilt_ref` (the frozen SFT model), and
    (3) with `shared_prompt_forward` encodes each group's prompt once in the loss's forward."""

    def __init__(self, *args, rl: RlConfig, sid_len: int, tilt_ref=None, **kwargs):
        self.rl, self.sid_len, self.tilt_ref = rl, sid_len, tilt_ref
        super().__init__(*args, **kwargs)

    def _generate_and_score_completions(self, inputs):
        self.rollout_rows = inputs
        batch = super()._generate_and_score_completions(inputs)  # TRL copies the rollout's extra keys into inputs
        if self.rl.loss == "tilted":
            self.tilt_ref.to(self.accelerator.device)
            if "sid_logp" in inputs[0]:  # the beam scores: the policy's own log-likelihoods, no forward needed
                policy = torch.tensor([x["sid_logp"] for x in inputs], dtype=torch.float32)
            else:
                policy = sid_logps(self.accelerator.unwrap_model(self.model), batch, self.sid_len)
            kl = tilt_batch(batch, policy, sid_logps(self.tilt_ref, batch, self.sid_len), self.rl.beta,
                            self.rl.num_generations)
            self._metrics["train"]["rl/kl_to_group_optimum"].append(kl)
        return batch

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **multimodal):
        # a model wrapped for several processes (DDP, DeepSpeed) syncs gradients only through its own forward, which
        # the shared-prompt encoding bypasses: there TRL's row-by-row forward runs
        wrapped = self.accelerator.unwrap_model(model) is not model
        if (not self.rl.shared_prompt_forward or wrapped or compute_aux_loss
                or any(v is not None for v in multimodal.values())):
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss,
                **multimodal)
        with self.accelerator.autocast():
            logps, entropy = shared_prompt_logps(model, input_ids, attention_mask, logits_to_keep, compute_entropy)
        return logps, entropy, None


def valid_rows(valid_df, max_rows: int | None, seed: int) -> tuple[list[list[int]], np.ndarray]:
    """Histories and targets of the valid rows RL measures: all, or a seeded sample of `max_rows`."""
    pick = np.arange(len(valid_df))
    if max_rows and len(pick) > max_rows:
        pick = np.sort(np.random.default_rng(seed).choice(len(pick), max_rows, replace=False))
    return [list(valid_df["history"].iloc[i]) for i in pick], np.asarray(valid_df["target"].iloc[pick].tolist())


def valid_ranking(model, tokenizer, trie, codes, histories, targets, beams, cutoff_len) -> dict[str, float]:
    """HR/NDCG@5/10/20 of the model's constrained beam search on (history, target) rows."""
    from sidrec.decode.inference import rank_histories

    was_training = model.training
    model.eval()
    try:
        sid_index, _ = rank_histories(model, tokenizer, trie, codes, histories, beams, cutoff_len, batch_size=64,
                                      progress=False)
    finally:
        model.train(was_training)
    sid_of_item = trie.sid_of_item(len(codes))
    return hr_ndcg(target_ranks(sid_index.tolist(), sid_of_item[targets].tolist()), ks=(5, 10, 20))


class ValidRanking(TrainerCallback):
    """Valid HR/NDCG@K (`measure(model)` -> metrics) at the start and every `every` steps, appended to
    OUT/valid_history.json (read back on resume); with `keep_best` the best NDCG@10 model is saved to OUT/best_model."""

    def __init__(self, trainer, tokenizer, measure, out: Path, every: int, keep_best: bool,
                 bound_to: tuple | None = None):
        self.trainer, self.tokenizer, self.measure_model = trainer, tokenizer, measure
        self.every, self.keep_best, self.bound_to = every, keep_best, bound_to
        self.best_dir, self.history_path = out / "best_model", out / "valid_history.json"
        self.history = json.loads(self.history_path.read_text()) if self.history_path.exists() else []
        self.best = max((h["NDCG@10"] for h in self.history), default=-1.0)

    def measure(self, state, model):
        trainer = self.trainer
        if not trainer.accelerator.is_main_process:  # one process measures and saves under accelerate launch
            return
        m = self.measure_model(model)
        self.history.append({"step": state.global_step, **{k: round(v, 5) for k, v in m.items()}})
        trainer._metrics["train"]["valid/HR@10"].append(m["HR@10"])
        trainer._metrics["train"]["valid/NDCG@10"].append(m["NDCG@10"])
        print(f"[rl] step {state.global_step}: valid HR@10 {m['HR@10']:.4f} NDCG@10 {m['NDCG@10']:.4f}")
        if self.keep_best and m["NDCG@10"] > self.best:
            self.best = m["NDCG@10"]
            save_model(trainer.accelerator.unwrap_model(model), self.tokenizer, self.best_dir, self.bound_to)
        write_json(self.history_path, self.history)

    def on_train_begin(self, args, state, control, model=None, **kw):
        if not self.history:
            self.measure(state, model)

    def on_step_end(self, args, state, control, model=None, **kw):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            if not self.history or self.history[-1]["step"] != state.global_step:
                self.measure(state, model)


def save_model(model, tokenizer, folder: Path, bound_to: tuple | None = None) -> None:
    """Save a HF model folder whole: written next to `folder`, then renamed over it; `bound_to` = (codes, sids,
    data_dir) it was trained on (`sidrec.model.binding.write_binding`)."""
    from sidrec.model.binding import write_binding

    staging = folder.with_name("." + folder.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    if bound_to is not None:
        write_binding(staging, *bound_to)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)


def save_final(trainer: GroupRolloutTrainer, tokenizer, cfg: RlConfig, out: Path, bound_to: tuple | None = None) -> Path:
    """OUT/model: the best valid model with `keep_best` (the SFT model if RL never beat it), else the last one;
    with LoRA the adapter merged into a plain HF folder."""
    final = trainer.accelerator.unwrap_model(trainer.model)
    best_dir, model_dir = out / "best_model", out / "model"
    if cfg.lora is not None:  # best_model/ then holds the best adapter: load it, merge, save a plain HF folder
        if cfg.keep_best and best_dir.is_dir():
            from peft import load_peft_weights, set_peft_model_state_dict

            set_peft_model_state_dict(final, load_peft_weights(str(best_dir)))
        save_model(final.merge_and_unload(), tokenizer, model_dir, bound_to)
    elif cfg.keep_best and best_dir.is_dir():
        shutil.rmtree(model_dir, ignore_errors=True)
        best_dir.rename(model_dir)
    else:
        save_model(final, tokenizer, model_dir, bound_to)
    return model_dir
