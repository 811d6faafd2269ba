"""Settings of `lstm_mae_pretrain` (no torch import: `plan` and `validate` read these fast)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# This is the entry of `lstm_mae_pretrain` in the `orchestrator.trainables` registry (pyproject.toml):
# the recipe is imported by the trial's process only, the input checks by `validate`.
RECIPE = "trainables.lstm_mae_pretrain"
INPUTS = "trainables.inputs.lstm_mae_pretrain"

INPUT_FIELDS = ("data",)
# `workers: N` runs N data-parallel Ray Train workers (DDP; see trainables/runtime/distributed.py)
DATA_PARALLEL = True


class Config(BaseModel):
    """Settings of one pretraining trial."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(description="Unlabeled windows: a Parquet file or `synthetic:ohlc?n=..&length=..&seed=..`.")
    window_length: int = Field(105, ge=8, description="Bars per window (T); every window must have it.")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="Share of windows (the last ones) for validation.")
    epochs: int = Field(75, ge=1, description="Maximum epochs.")
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["cosine", "plateau", "constant"] = Field("cosine", description="Learning-rate schedule.")
    grad_clip: float | None = Field(1.0, gt=0, description="Max gradient norm; None disables clipping.")
    hidden_size: int = Field(128, ge=1, description="LSTM units per direction.")
    num_layers: int = Field(1, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1, description="Between LSTM layers (num_layers > 1).")
    mask_strategy: Literal["random", "block", "patch"] = "patch"
    mask_ratio: float = Field(0.15, gt=0, lt=1)
    patch_len: int = Field(12, ge=1, description="Bars per patch for the patch strategy.")
    mean_block: float = Field(3.0, ge=1, description="Mean hidden run length for the block strategy.")
    time_warp_sigma: float = Field(0.12, ge=0)
    scaling_sigma: float = Field(0.1, ge=0)
    jitter_sigma: float = Field(0.03, ge=0)
    aug_multiplier: int = Field(4, ge=0, description="Augmented passes per epoch on top of the plain one.")
    early_stopping_patience: int | None = Field(10, ge=1, description="Epochs without val/loss improvement.")
    early_stopping_min_delta: float = Field(0.0, ge=0)
    mixed_precision: Literal["no", "bf16"] = Field(
        "no", description="bf16 autocast of the training forward on CUDA (ignored on CPU); validation stays float32."
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    deterministic: bool = Field(False, description="Deterministic kernels (slower on GPU).")
    seed: int = 0

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        if self.patch_len > self.window_length:
            raise ValueError(f"patch_len ({self.patch_len}) must not exceed window_length ({self.window_length})")
        return self
