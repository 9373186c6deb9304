"""SASRec's settings, without torch: config validation (`sidrec optimize`) reads them without loading the model code."""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator, model_validator

from sidrec.config import Seed, StageConfig, setting_error


class SasrecConfig(StageConfig):
    hidden: int = Field(64, ge=8)
    blocks: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    ffn_mult: int = Field(1, ge=1)  # feed-forward width = ffn_mult * hidden
    dropout: float = Field(0.3, ge=0.0, lt=1.0)
    max_len: int = Field(10, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(256, ge=1)
    max_epochs: int = Field(200, ge=1)
    patience: int = Field(5, ge=1)
    seed: Seed = 42
    max_minutes: float = Field(10.0, gt=0)
    threads: int = Field(1, ge=1)
    eval_batch_size: int = Field(1024, ge=1)
    # Cross-fitting: with folds = K > 1, train only on the train rows of users whose id % K != holdout_fold, so the
    # model can score that fold's rows without having seen them (RL's collaborative reward: on Industrial a SASRec
    # puts its own training rows' targets in its top 10 for ~.55-.58 of them against ~.15-.16 on valid: it recalls
    # them; lab/rl_teacher.py).
    folds: int = Field(1, ge=1)
    holdout_fold: int = Field(0, ge=0)

    @field_validator("heads")
    @classmethod
    def _heads_split_hidden(cls, v: int, info: ValidationInfo) -> int:
        hidden = info.data.get("hidden")
        if hidden is not None and hidden % v:
            raise setting_error(f"must divide hidden={hidden} (each attention head is hidden / heads wide), got {v}")
        return v

    @model_validator(mode="after")
    def _fold_in_range(self):
        if self.holdout_fold >= self.folds:
            raise ValueError(f"holdout_fold={self.holdout_fold} must be below folds={self.folds}")
        return self
