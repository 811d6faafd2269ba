"""Settings of `lstm_classifier_finetune` (no torch import: `plan` and `validate` read these fast)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# This is the entry of `lstm_classifier_finetune` in the `orchestrator.trainables` registry (pyproject.toml):
# the recipe is imported by the trial's process only, the input checks by `validate`.
RECIPE = "trainables.lstm_classifier_finetune"
INPUTS = "trainables.inputs.lstm_classifier_finetune"

INPUT_FIELDS = ("data", "encoder")


class Config(BaseModel):
    """Settings of one fine-tuning trial."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(description="Labeled windows Parquet, or `synthetic:ohlc?n=..&labeled=1`.")
    window_length: int = Field(105, ge=8)
    encoder: str | None = Field(
        None,
        description="Pretrained encoder: encoder.pt, a checkpoint folder, or a "
        "reference such as ${pretrain.best.checkpoint}.",
    )
    hidden_size: int = Field(128, ge=1, description="LSTM units; must equal the encoder's per-direction size.")
    num_heads: int = Field(8, ge=1, description="Attention heads; must divide hidden_size.")
    dropout: float = Field(0.1, ge=0, lt=1)
    folds: int = Field(5, ge=2, description="K of the out-of-fold evaluation.")
    epochs: int = Field(40, ge=1, description="Maximum epochs per fold.")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    freeze_encoder_epochs: int = Field(0, ge=0, description="Epochs with the transferred LSTM frozen.")
    encoder_lr_factor: float = Field(1.0, gt=0, description="LR multiplier of the transferred LSTM.")
    class_weights: Literal["none", "balanced"] = Field("none", description="balanced: weight n / (C * n_c).")
    sampler: Literal["shuffle", "balanced"] = Field("shuffle", description="balanced: resample classes equally.")
    inner_val_fraction: float = Field(
        0.15, gt=0, lt=0.5, description="Share of a fold's training windows used for early stopping."
    )
    early_stopping_patience: int | None = Field(10, ge=1)
    mixed_precision: Literal["no", "bf16"] = Field(
        "no", description="bf16 autocast of the training forward on CUDA (ignored on CPU); validation stays float32."
    )
    device: str = "auto"
    deterministic: bool = False
    seed: int = 0

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size})")
        return self
