"""Settings of `multitask_span` (no torch import: `plan` and `validate` read these fast)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# This is the entry of `multitask_span` in the `orchestrator.trainables` registry (pyproject.toml):
# the recipe is imported by the trial's process only, the input checks by `validate`.
RECIPE = "trainables.multitask_span"
INPUTS = "trainables.inputs.multitask_span"

INPUT_FIELDS = ("data",)
TASKS = ("type", "ptr", "span", "countdown")
AUTO_TEST_FRACTION = 0.2
MIN_TEST_WINDOWS = 20


class Config(BaseModel):
    """Settings of one multi-task span trial."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(
        description="Labeled windows (Parquet with label, expansion_start, expansion_end) "
        "or `synthetic:ohlc?n=..&labeled=1`."
    )
    window_length: int = Field(105, ge=20, description="Bars per window (T).")
    val_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Share of windows (the last ones by `start`, "
        "else file order) for validation; overlapping training windows are purged.",
    )
    test_fraction: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="Share of windows after validation held "
        "out to report the scores of what was chosen on validation (threshold, "
        "best epoch, ensemble) on windows that did not choose it. None: "
        f"{AUTO_TEST_FRACTION} when that leaves at least {MIN_TEST_WINDOWS} test "
        "windows, else 0; 0: no test block (final/val_* are then the only, "
        "optimistic, scores).",
    )
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate (model and uncertainty parameters).")
    weight_decay: float = Field(1e-4, ge=0)
    grad_clip: float | None = Field(1.0, gt=0, description="Max gradient norm; None disables clipping.")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Epochs without val_loss improvement; None trains all epochs (the baseline protocol)."
    )
    # model
    hidden_size: int = Field(96, ge=4, description="LSTM units per direction.")
    num_layers: int = Field(1, ge=1)
    bidirectional: bool = True
    dropout: float = Field(0.1, ge=0, lt=1, description="On the encoder output, before the heads.")
    use_crf: bool = Field(False, description="CRF over per-bar in/out span tags (pytorch-crf); spans by Viterbi.")
    # losses
    loss_weighting: Literal["uncertainty", "fixed"] = "uncertainty"
    loss_weights: dict[Literal["type", "ptr", "span", "countdown"], float] = Field(
        default_factory=lambda: {"type": 1.0, "ptr": 1.0, "span": 1.0, "countdown": 1.0},
        description="Task weights for loss_weighting: fixed.",
    )
    span_edge_softness: float = Field(1.0, ge=0, description="tau (bars) of the soft span target; 0 = hard mask.")
    pointer_delta: float = Field(0.08, gt=0, description="Huber delta of the pointer loss (window fractions).")
    countdown_delta: float = Field(1.0, gt=0, description="Huber delta of the countdown loss.")
    countdown_scale: float = Field(10.0, gt=0, description="Countdown target unit in bars: (onset - t) / scale.")
    # diagnostics
    threshold: float = Field(0.5, gt=0, lt=1, description="Span threshold of the per-epoch metrics.")
    checkpoint_epoch_interval: int | None = Field(
        10, ge=1, description="Write checkpoint_epoch_N.pt every N epochs (and at the last); None: never."
    )
    gradient_stats_interval: int = Field(10, ge=1, description="Epochs between gradient_stats.csv rows (and epoch 1).")
    ensemble_last_k: int = Field(
        0, ge=0, description="Average soft span predictions of the last k periodic checkpoints after training (0: off)."
    )
    plots: bool = Field(True, description="Write PNG plots after training.")
    mixed_precision: Literal["no", "bf16"] = Field(
        "no", description="bf16 autocast of the training forward on CUDA (ignored on CPU); validation stays float32."
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    deterministic: bool = False
    seed: int = 0

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        if self.ensemble_last_k and self.checkpoint_epoch_interval is None:
            raise ValueError("ensemble_last_k needs checkpoint_epoch_interval (the ensemble reads those checkpoints)")
        return self

    def split_fractions(self, n: int) -> tuple[float, float]:
        """(validation, test) shares for n windows: the test share is the setting, or (None) the
        default when the data allow it."""
        test = self.test_fraction
        if test is None:
            test = AUTO_TEST_FRACTION if n * AUTO_TEST_FRACTION >= MIN_TEST_WINDOWS else 0.0
        return self.val_fraction, test
