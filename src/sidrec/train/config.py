"""Settings of the SFT and RL stages, without importing torch or transformers: `sidrec optimize`, the pipeline and
config validation read them in well under a second; the stages themselves (`sft.py`, `rl.py`) import them from here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sidrec.config import StageConfig
from sidrec.errors import SidrecError

# the packages HF Trainer's `report_to` integrations import
TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "swanlab": ("swanlab",), "wandb": ("wandb",)}


def check_tracker(report_to: str, field: str) -> None:
    """Error before training when `report_to` names a tracker whose package is not installed."""
    import importlib.util

    packages = TRACKER_PACKAGES.get(report_to, ())
    if packages and not any(importlib.util.find_spec(p) for p in packages):
        raise SidrecError(f"{field}={report_to}: the {packages[0]} package is not installed; `pip install "
                          f"{packages[0]}`, or set {field}=none")


class SmallModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 768
    max_position_embeddings: int = 512
    dropout: float = 0.1
    vocab_size: int = 2000  # BPE merges learned from item text, before SID tokens


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class SamplingSettings(BaseModel):
    """How seqrec train rows are drawn: `uniform` (each row once) or `inverse_frequency` (rows whose target is rare
    are repeated, a row weighing (target count)^-power; see `sidrec.tasks.builders`)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["uniform", "inverse_frequency"] = "uniform"
    power: float = Field(0.5, gt=0, le=1)


class AugmentSettings(BaseModel):
    """Extra seqrec train rows built from the existing ones (0: off; see `sidrec.tasks.builders`)."""

    model_config = ConfigDict(extra="forbid")
    short_history: int = Field(0, ge=0)  # k: rows with > k history items again with only their last k
    drop_old_fraction: float = Field(0.0, ge=0, lt=1)  # f: rows again without their oldest floor(n * f) items


class SftConfig(StageConfig):
    base_model: str = "small"  # "small": a Qwen2 built from `small` + a data tokenizer; else an HF id or local path
    small: SmallModelConfig = Field(default_factory=SmallModelConfig)
    tasks: dict[str, float] = {"seqrec": 1.0, "title2sid": 1.0, "sid2title": 1.0}
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)  # train split only
    augment: AugmentSettings = Field(default_factory=AugmentSettings)  # train split only
    # leave each user's latest N training rows out of SFT, so RL (`rl.rows_per_user: N`) can train on rows the model
    # has not memorised; 0 trains on every row
    hold_out_latest: int = Field(0, ge=0)
    epochs: float = 3.0
    batch_size: int = 128
    micro_batch_size: int = 16
    learning_rate: float = 5e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    lr_scheduler: str = "cosine"
    cutoff_len: int = 256
    gradient_checkpointing: bool = False
    bf16: bool = False
    lora: LoraSettings | None = None
    group_by_length: bool = True
    freeze_llm: bool = False  # train only the SID token rows of the input and output embeddings
    early_stopping_patience: int | None = 2
    eval_steps: float = 0.5  # < 1: fraction of an epoch between valid-loss evaluations; >= 1: steps
    max_valid_rows: int | None = 2000
    report_to: Literal["none", "tensorboard", "swanlab", "wandb"] = "none"
    deepspeed: str | None = None  # a DeepSpeed JSON, e.g. configs/ds_zero2.json, under `accelerate launch`
    trust_remote_code: bool = False
    threads: int | None = None
    seed: int = 42


class RlConfig(StageConfig):
    rewards: dict[str, float] = {"rule": 1.0, "ranking": 1.0}  # MiniOneRec's paper default
    # SASRec run folder(s) for the `collaborative` reward: one, a list (averaged), or {fold: folder(s)} of
    # cross-fitted runs (`sasrec.folds`), each scoring only the users it held out: use these on training rows
    scorer: str | list[str] | dict[int, str | list[str]] | None = None
    # score: the `collaborative` reward is SASRec's z-score for every completion. ignore: completions already in the
    # history get 0 and the others are z-scored among themselves, so repeats are left to the `novelty` reward. SASRec
    # ranks the user's own items near the top (on Industrial, z ~ +1.4 within the SFT model's top 32 beams), so with
    # `score` and weight 1.5 a repeat earns ~+2 against novelty's -1, although repeats fall over time (train 9.0%,
    # test 2.8% of targets). Measured (docs/benchmarks.md, RL, session 11): `ignore` cut the repeats but lost NDCG@10
    # on valid and test, so `score` stays the default.
    collaborative_repeats: Literal["score", "ignore"] = "score"
    num_generations: int = Field(16, ge=2)
    rollout: Literal["beam", "sample"] = "beam"
    add_target: bool = False  # put the target in place of the last beam when a group misses it
    sample_train: bool = True
    sample_size: int = Field(8000, ge=1)  # training rows used when sample_train
    # keep only each user's latest N training rows (before sampling): their histories are the closest to the rows
    # the model will be asked about next; None keeps every row
    rows_per_user: int | None = Field(None, ge=1)
    # rows: training rows (history -> target). after_train: one prompt per user, their history at the end of the
    # training period, whose next item is not in the training data (no target: target-free rewards only). The SFT
    # model never saw these histories as prompts, so what RL teaches there is not undone by its memory of the rows.
    prompts: Literal["rows", "after_train"] = "rows"
    # after_train only: per user, this many more prompts, each their end-of-training history plus one next item
    # drawn from the start model's top-`num_generations` beams (by its probabilities). Such a history ends, like
    # most valid and test rows, with an item after the training period, and no model has memorised it.
    extend_prompts: int = Field(0, ge=0)
    # after_train + extend_prompts only: per user, this many more prompts, each the last 1..`suffix_max` items of one
    # of the user's continued histories. 40% of Industrial's test rows (57% of the SFT model's test NDCG@10) come from
    # users with no training row: short histories (mostly 1-4 items) that end after the training period. No
    # end-of-training history looks like them; these suffixes do.
    suffix_prompts: int = Field(0, ge=0)
    suffix_max: int = Field(4, ge=1)
    # Drawn items at the end of each suffix history before it is cut: 1 cuts the continued history as it is, 2
    # continues it once more from the start model's beams, so a suffix of 1-2 items lies wholly after the training
    # period, as the histories of users with no training row do. Measured (session 11): no gain over 1.
    suffix_depth: int = Field(1, ge=1)
    popularity_window: int | None = Field(2000, ge=1)  # latest training rows the `popularity` reward counts
    train_batch_size: int = Field(256, ge=2)  # completions per optimiser step (per device) = prompts x G
    micro_batch_size: int = Field(64, ge=1)  # completions per forward/backward
    epochs: float = Field(1.0, gt=0)
    learning_rate: float = Field(1e-4, gt=0)
    beta: float = Field(1e-3, ge=0)
    # group: advantages are rewards z-scored within each group (GRPO). none: only centred (Dr. GRPO), so a reward's
    # scale survives next to the KL term and across groups: tiny differences (a popularity gap in a group without
    # repeats) are not blown up to unit size, and the KL optimum is the SFT policy tilted by exp(reward / beta),
    # the re-ranking bench/rl_fusion_bound.py measures.
    scale_rewards: Literal["group", "batch", "none"] = "group"
    # grpo: TRL's GRPO loss (advantage-weighted log-likelihood + k3 KL to the SFT model with weight beta).
    # tilted: the same trainer, with each completion's advantage replaced by G*C*(q - p): q = softmax over the group
    # of log pi_ref + advantage / beta (the KL-regularised optimum, restricted to the group) and p = the policy's own
    # softmax over the group. That is the gradient of the cross-entropy from q to the policy's group distribution, so
    # it stops where the policy reaches the optimum instead of balancing against a per-sample KL estimate.
    loss: Literal["grpo", "tilted"] = "grpo"
    max_grad_norm: float = 0.3
    warmup_ratio: float = 0.03
    lr_scheduler: str = "cosine"
    eval_step: float = Field(0.1, gt=0)  # < 1: fraction of training between valid evaluations; >= 1: steps
    eval_beams: int = Field(20, ge=10)
    max_valid_rows: int | None = 1000
    keep_best: bool = True
    shared_prompt_forward: bool = True  # encode each group's prompt once in the loss (see shared_prompt_logps)
    cutoff_len: int = 128
    bf16: bool = False
    gradient_checkpointing: bool = False
    lora: LoraSettings | None = None
    report_to: Literal["none", "tensorboard", "swanlab", "wandb"] = "none"
    deepspeed: str | None = None
    trust_remote_code: bool = False
    threads: int | None = None
    seed: int = 42
