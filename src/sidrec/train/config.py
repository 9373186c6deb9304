"""Settings of the SFT and RL stages, without importing torch or transformers: `sidrec optimize`, the pipeline and
config validation read them in well under a second; the stages themselves (`sft.py`, `rl.py`) import them from here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from sidrec.config import Section, Seed, StageConfig, setting_error

# HF schedulers that need no extra arguments (transformers.SchedulerType)
Scheduler = Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                    "inverse_sqrt"]


# the packages HF Trainer's `report_to` integrations import
TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "swanlab": ("swanlab",), "wandb": ("wandb",)}


def check_tracker(report_to: str, field: str) -> None:
    """Error before training when `report_to` names a tracker whose package is not installed."""
    import importlib.util

    from sidrec.errors import SidrecError

    packages = TRACKER_PACKAGES.get(report_to, ())
    if packages and not any(importlib.util.find_spec(p) for p in packages):
        raise SidrecError(f"{field}={report_to}: the {packages[0]} package is not installed; `pip install "
                          f"{packages[0]}`, or set {field}=none")


def _divides(value: int, info: ValidationInfo, total: str) -> int:
    """`value` (a micro-batch) must divide the field `total` of the same model (when that one is valid)."""
    if info.data.get(total) is not None and info.data[total] % value:
        raise setting_error(f"must divide {total}={info.data[total]}, got {value}")
    return value


class SmallModelConfig(Section):
    """The Qwen2 built from scratch when `base_model: small`."""

    hidden_size: int = Field(256, ge=8)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)  # attention heads; each is hidden_size / num_heads wide
    num_kv_heads: int = Field(2, ge=1)  # grouped-query attention: heads share these key/value heads
    intermediate_size: int = Field(768, ge=1)  # MLP width
    max_position_embeddings: int = Field(512, ge=8)  # longest sequence the rotary table covers
    dropout: float = Field(0.1, ge=0, lt=1)  # attention dropout
    # BPE vocabulary learned from item text, before SID tokens; its 256 byte symbols and EOS come first
    vocab_size: int = Field(2000, ge=257)

    @field_validator("num_heads")
    @classmethod
    def _heads_split_hidden(cls, v: int, info: ValidationInfo) -> int:
        hidden = info.data.get("hidden_size")
        if hidden is not None and (hidden % v or (hidden // v) % 2):
            raise setting_error(f"must divide hidden_size={hidden} into an even head width (rotary embeddings), "
                                f"got {v}")
        return v

    @field_validator("num_kv_heads")
    @classmethod
    def _kv_heads_split_heads(cls, v: int, info: ValidationInfo) -> int:
        heads = info.data.get("num_heads")
        if heads is not None and heads % v:
            raise setting_error(f"must divide num_heads={heads}, got {v}")
        return v


class LoraSettings(Section):
    r: int = Field(16, ge=1)  # rank of each adapter
    alpha: int = Field(32, ge=1)  # the adapter's output is scaled by alpha / r
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                                      min_length=1)


class SamplingSettings(Section):
    """How seqrec train rows are drawn: `uniform` (each row once) or `inverse_frequency` (rows whose target is rare
    are repeated, a row weighing (target count)^-power; see `sidrec.tasks.builders`)."""

    kind: Literal["uniform", "inverse_frequency"] = "uniform"
    power: float = Field(0.5, gt=0, le=1)


class AugmentSettings(Section):
    """Extra seqrec train rows built from the existing ones (0: off; see `sidrec.tasks.builders`)."""

    short_history: int = Field(0, ge=0)  # k: rows with > k history items again with only their last k
    drop_old_fraction: float = Field(0.0, ge=0, lt=1)  # f: rows again without their oldest floor(n * f) items


class SftConfig(StageConfig):
    base_model: str = "small"  # "small": a Qwen2 built from `small` + a data tokenizer; else an HF id or local path
    small: SmallModelConfig = Field(default_factory=SmallModelConfig)
    # task -> weight: each task's examples are repeated floor(w) times plus a seeded fraction w - floor(w) of them,
    # so the weights set the mix; 0 leaves a task out (tasks: sidrec.tasks.template.TASKS)
    tasks: dict[str, float] = {"seqrec": 1.0, "title2sid": 1.0, "sid2title": 1.0}
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)  # train split only
    augment: AugmentSettings = Field(default_factory=AugmentSettings)  # train split only
    epochs: float = Field(3.0, gt=0)  # passes over the train examples; a fraction stops part-way
    batch_size: int = Field(128, ge=1)  # examples per optimiser step, over all devices
    # examples per forward/backward on one device; batch_size / (micro_batch_size x devices) steps are accumulated,
    # so this trades memory for speed without changing what is learnt
    micro_batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(5e-4, gt=0)  # peak learning rate, after warm-up
    weight_decay: float = Field(0.0, ge=0)  # AdamW's decoupled weight decay
    warmup_ratio: float = Field(0.03, ge=0, lt=1)  # share of the training steps spent ramping the rate up from 0
    lr_scheduler: Scheduler = "cosine"  # how the rate falls after warm-up (an HF scheduler)
    cutoff_len: int = Field(256, ge=8)  # longest example in tokens: the oldest history items are dropped first
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, ~30% slower
    bf16: bool = False  # bfloat16 mixed precision (GPUs that support it)
    lora: LoraSettings | None = None  # None: full fine-tuning; else train LoRA adapters only
    group_by_length: bool = True  # batch examples of similar length together: less padding
    freeze_llm: bool = False  # train only the SID token rows of the input and output embeddings
    # "full": every target scored over the whole vocabulary (MiniOneRec's); "sid": a target that is a SID response
    # (seqrec, title2sid) is scored over the SID tokens and EOS only, the other tasks' text over the whole
    # vocabulary. Decoding is trie-constrained to SIDs, so "sid" drops the full-vocabulary head from most of a
    # step, the bulk of it for a 151k-token LLM (docs/benchmarks.md, SFT)
    loss: Literal["full", "sid"] = "full"
    # stop after this many evaluations without a lower valid loss, keeping the best checkpoint (None or 0: never)
    early_stopping_patience: int | None = Field(2, ge=0)
    eval_steps: float = Field(0.5, gt=0)  # < 1: fraction of an epoch between valid-loss evaluations; >= 1: steps
    max_valid_rows: int | None = Field(2000, ge=1)  # valid examples drawn (seeded) for the valid loss; None: all
    report_to: Literal["none", "tensorboard", "swanlab", "wandb"] = "none"  # where training curves are logged
    deepspeed: str | None = None  # a DeepSpeed JSON, e.g. configs/ds_zero2.json, under `accelerate launch`
    trust_remote_code: bool = False  # let a hub model run its own code (only for models you trust)
    threads: int | None = Field(None, ge=1)  # torch CPU threads (None: torch's default)
    seed: Seed = 42  # data order, sampling and initialisation

    @field_validator("tasks")
    @classmethod
    def _known_weighted_tasks(cls, tasks: dict[str, float]) -> dict[str, float]:
        from sidrec.tasks.template import TASKS

        unknown = sorted(set(tasks) - set(TASKS))
        if unknown:
            raise setting_error(f"unknown task(s) {unknown}; valid: {', '.join(TASKS)}")
        negative = sorted(t for t, w in tasks.items() if w < 0)
        if negative:
            raise setting_error(f"weights must be >= 0 (0 leaves a task out), got {negative} below 0")
        if not any(w > 0 for w in tasks.values()):
            raise setting_error(f"at least one task needs a weight > 0, got {tasks or 'none'}")
        return tasks

    @field_validator("micro_batch_size")
    @classmethod
    def _micro_divides_batch(cls, v: int, info: ValidationInfo) -> int:
        return _divides(v, info, "batch_size")


class RlConfig(StageConfig):
    """RL on the SFT model. The defaults are sidrec's recipe (configs/rl-tilted-cpu.yaml, docs/benchmarks.md "RL"):
    the tilted loss on target-free prompts, rewarded by SASRec, novelty and recent popularity. It needs `scorer`.
    MiniOneRec's GRPO recipe (rule + ranking rewards on training rows, z-scored groups, beta 1e-3) is
    configs/rl-cpu.yaml."""

    # reward name -> weight (see `sidrec.train.rewards`): rule, ranking (MiniOneRec's), prefix, diversity,
    # collaborative (needs `scorer`), novelty, popularity
    rewards: dict[str, float] = {"collaborative": 1.5, "novelty": 1.0, "popularity": 0.3}
    # SASRec run folder(s) for the `collaborative` reward: one, a list (averaged), or {fold: folder(s)} of
    # cross-fitted runs (`sasrec.folds`), each scoring only the users it held out: use these on training rows
    scorer: str | list[str] | dict[int, str | list[str]] | None = None
    num_generations: int = Field(32, ge=2)  # completions per prompt (the group)
    rollout: Literal["beam", "sample"] = "beam"  # the group: top-G constrained beams, or G constrained samples
    add_target: bool = False  # prompts rows: put the target in place of the last beam when a group misses it
    sample_train: bool = False  # train on a seeded sample of `sample_size` prompts instead of all
    sample_size: int = Field(8000, ge=1)
    # rows: training rows (history -> target). after_train: one prompt per user, their history at the end of the
    # training period, whose next item is not in the training data (no target: target-free rewards only). The SFT
    # model never saw these histories as prompts, so what RL teaches there is not undone by its memory of the rows.
    prompts: Literal["rows", "after_train"] = "after_train"
    # after_train only: per user, this many more prompts, each their end-of-training history plus one next item
    # drawn from the start model's top-`num_generations` beams (by its probabilities). Such a history ends, like
    # most valid and test rows, with an item after the training period, and no model has memorised it.
    extend_prompts: int = Field(5, ge=0)
    # after_train + extend_prompts only: per user, this many more prompts, each the last 1..`suffix_max` items of one
    # of the user's continued histories: short histories that end after the training period, like those of the users
    # with no training row (on Industrial 40% of the test rows). No end-of-training history looks like them.
    suffix_prompts: int = Field(2, ge=0)
    suffix_max: int = Field(4, ge=1)
    popularity_window: int | None = Field(2000, ge=1)  # latest training rows the `popularity` reward counts
    train_batch_size: int = Field(512, ge=2)  # completions per optimiser step, over all processes = prompts x G
    micro_batch_size: int = Field(256, ge=1)  # completions per forward/backward
    epochs: float = Field(1.0, gt=0)
    learning_rate: float = Field(1e-4, gt=0, le=1)
    beta: float = Field(1.0, ge=0)  # weight of the KL to the SFT model (tilted: the tilt is exp(advantage / beta))
    # group: advantages are rewards z-scored within each group (GRPO). none: only centred (Dr. GRPO), so a reward's
    # scale survives next to the KL term and across groups: tiny differences (a popularity gap in a group without
    # repeats) are not blown up to unit size, and the KL optimum is the SFT policy tilted by exp(reward / beta).
    scale_rewards: Literal["group", "batch", "none"] = "none"
    # grpo: TRL's GRPO loss (advantage-weighted log-likelihood + k3 KL to the SFT model with weight beta).
    # tilted: the same trainer, with each completion's advantage replaced by G*C*(q - p): q = softmax over the group
    # of log pi_ref + advantage / beta (the KL-regularised optimum, restricted to the group) and p = the policy's own
    # softmax over the group. That is the gradient of the cross-entropy from q to the policy's group distribution, so
    # it stops where the policy reaches the optimum instead of balancing against a per-sample KL estimate.
    loss: Literal["grpo", "tilted"] = "tilted"
    max_grad_norm: float = Field(0.3, gt=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    lr_scheduler: Scheduler = "cosine"  # how the rate falls after warm-up (an HF scheduler)
    eval_step: float = Field(0.25, gt=0)  # < 1: fraction of training between valid evaluations; >= 1: steps
    eval_beams: int = Field(20, ge=10)
    max_valid_rows: int | None = Field(None, ge=1)  # valid rows measured (a seeded sample); None: all
    keep_best: bool = True  # save the model of the best valid NDCG@10 (the SFT model if RL never beats it)
    # encode each group's prompt once in the loss (see `shared_prompt_logps`); off: TRL's row-by-row forward
    shared_prompt_forward: bool = True
    cutoff_len: int = Field(128, ge=8)  # prompt + completion tokens
    bf16: bool = False  # bfloat16 mixed precision (GPUs that support it)
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, slower
    lora: LoraSettings | None = None  # None: full fine-tuning; else train LoRA adapters only
    report_to: Literal["none", "tensorboard", "swanlab", "wandb"] = "none"  # where training curves are logged
    deepspeed: str | None = None  # a DeepSpeed JSON under `accelerate launch`
    trust_remote_code: bool = False  # let a hub model run its own code (only for models you trust)
    threads: int | None = Field(None, ge=1)  # torch CPU threads (None: torch's default)
    seed: Seed = 42  # prompt sampling, rollouts and data order

    @field_validator("train_batch_size")
    @classmethod
    def _whole_groups(cls, v: int, info: ValidationInfo) -> int:
        g = info.data.get("num_generations")
        if g is not None and v % g:
            raise setting_error(f"must be a multiple of num_generations={g} (whole groups per step), got {v}")
        return v

    @field_validator("micro_batch_size")
    @classmethod
    def _micro_divides_batch(cls, v: int, info: ValidationInfo) -> int:
        return _divides(v, info, "train_batch_size")


class UpdateConfig(StageConfig):
    """`sidrec update`: continue a trained model's SFT on a later slice of data (its rows, the alignment tasks of its
    new items, and a replay sample of the old training examples). Every other setting (cutoff_len, lora, bf16,
    sampling, ...) is the one the model was trained with, read from its run's manifest."""

    # share of the old training examples (seqrec rows and alignment of old items) trained on again, drawn seeded:
    # without replay the model drifts to the new slice and forgets old items
    replay_fraction: float = Field(0.2, ge=0, le=1)
    tasks: dict[str, float] | None = None  # task weights on the new slice (as SftConfig.tasks); None: the model's
    epochs: float = Field(4.0, gt=0)  # passes over new + replayed examples (4 taught new items more than 2)
    # peak rate; None: the one the model was trained with (its SFT's). A tenth of it barely taught the new items
    # (docs/benchmarks.md, "Update")
    learning_rate: float | None = Field(None, gt=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    batch_size: int | None = Field(None, ge=1)  # None: as the model was trained
    micro_batch_size: int | None = Field(None, ge=1)  # None: as the model was trained
    early_stopping_patience: int | None = Field(2, ge=0)  # on the new data's valid loss (None or 0: never)
    eval_steps: float = Field(0.5, gt=0)  # < 1: fraction of an epoch between valid-loss evaluations; >= 1: steps
    threads: int | None = Field(None, ge=1)  # torch CPU threads (None: torch's default)
    seed: Seed = 42  # replay sample, data order

    @field_validator("tasks")
    @classmethod
    def _known_weighted_tasks(cls, tasks: dict[str, float] | None) -> dict[str, float] | None:
        return None if tasks is None else SftConfig._known_weighted_tasks(tasks)
