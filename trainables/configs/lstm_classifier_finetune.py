"""Settings of `lstm_classifier_finetune`, its data loading and the check of its inputs (torch is
imported only to check a given encoder checkpoint)."""

from __future__ import annotations

from typing import Literal

import numpy as np

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trainables.data import ohlc as ohlc_data
from trainables.data import overlap

INPUT_FIELDS = ("data", "encoder")
# what check_inputs reads besides the inputs (hidden_size: the encoder must fit the classifier)
CHECK_FIELDS = ("window_length", "folds", "hidden_size", "num_heads")


class Config(BaseModel):
    """Settings of one fine-tuning trial."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(description="Labeled windows Parquet, or `synthetic:ohlc?n=..&labeled=1`.")
    window_length: int = Field(105, ge=8)
    encoder: str | None = Field(None, description="Pretrained encoder: encoder.pt, a checkpoint folder, or a "
                                "reference such as ${pretrain.best.checkpoint}.")
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
    inner_val_fraction: float = Field(0.15, gt=0, lt=0.5, description="Share of a fold's training windows "
                                      "used for early stopping.")
    early_stopping_patience: int | None = Field(10, ge=1)
    device: str = "auto"
    deterministic: bool = False
    seed: int = 0

    @model_validator(mode="after")
    def _cross_checks(self) -> "Config":
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size})")
        return self


def preflight(config: dict, workdir) -> dict:
    """Overrides for `orchestrator preflight`: two folds of one epoch on the first windows."""
    from trainables.data.ohlc import head

    return {"data": head(config["data"], 60, workdir, config.get("window_length", 105), labeled=True), "epochs": 1, "folds": 2}


def load_labeled(cfg: Config) -> tuple[ohlc_data.Windows, np.ndarray, list[str]]:
    """Labeled windows, integer labels and class names; raises ValueError naming the problem."""
    windows = ohlc_data.load_windows(cfg.data, cfg.window_length, labeled=True)
    labels = np.asarray(windows.extra["label"]).astype(str)
    classes = sorted(set(labels.tolist()))
    if len(classes) < 2:
        raise ValueError(f"{cfg.data}: needs at least 2 classes in 'label', found {classes}")
    if cfg.folds > len(labels):
        raise ValueError(f"{cfg.data}: {len(labels)} windows are fewer than folds={cfg.folds}")
    y = np.searchsorted(classes, labels)
    return windows, y, classes


def folds_note(line: overlap.Timeline, folds: list, n: int) -> str:
    """One line on how n windows were folded (`validate`, metadata.json): grouped, purged folds
    when some share bars (trainables/overlap.py), else stratified ones."""
    purged = sum(n - len(tr) - len(va) for tr, va in folds)
    if line.overlapping:
        return (f"{line.overlapping} of {n} windows share bars with another (positions: {line.source}); "
                f"{len(folds)} grouped, purged folds ({purged} training windows purged over all folds), early "
                "stopping split the same way; no window shares a bar with one on the other side")
    return f"no window shares a bar with another (positions: {line.source}); {len(folds)} stratified folds"


def check_inputs(cfg: Config) -> str:
    from trainables.data.folds import make_folds

    windows, y, _ = load_labeled(cfg)
    line = overlap.timeline(windows.ohlc, windows.start)
    note = f"{cfg.data}: {folds_note(line, make_folds(y, cfg.folds, cfg.seed, line.start, cfg.window_length), len(y))}"
    if cfg.encoder:
        # only here torch is needed: the encoder checkpoint's shapes against the classifier's
        import torch

        from trainables.lstm_classifier_finetune import build_model

        try:
            build_model(cfg, 2, torch.device("cpu"))
        except ValueError as exc:
            exc.field = "encoder"  # type: ignore[attr-defined]
            raise
    return note
