"""The inputs of `lstm_classifier_finetune` before a run. `check` reads the labeled windows
(ValueError naming the file and rows; `validate`, and `run` before Ray starts), says how they fold,
and checks that a given encoder fits the classifier (the one input check that imports torch, and
only when there is an encoder); `preflight` shrinks them for `orchestrator preflight`."""

from __future__ import annotations

from trainables.configs.lstm_classifier_finetune import Config
from trainables.data import ohlc
from trainables.data.folds import folds_note, make_folds
from trainables.data.labeled import load_classified
from trainables.data.overlap import timeline

CHECK_FIELDS = ("window_length", "folds", "hidden_size", "num_heads")


def preflight(config: dict, workdir) -> dict:
    """Overrides for `orchestrator preflight`: two folds of one epoch on the first windows."""
    data = ohlc.head(config["data"], 60, workdir, config.get("window_length", 105), labeled=True)
    return {"data": data, "epochs": 1, "folds": 2}


def check(cfg: Config) -> str:
    """Read the data and the encoder's shapes (ValueError naming file and rows, or both shapes);
    a note on how the windows are folded."""
    windows, y, _ = load_classified(cfg.data, cfg.window_length, cfg.folds)
    line = timeline(windows.ohlc, windows.start)
    note = f"{cfg.data}: {folds_note(line, make_folds(y, cfg.folds, cfg.seed, line.start, cfg.window_length), len(y))}"
    if cfg.encoder:
        from trainables.models.encoders import check_transfer  # imports torch: only when there is an encoder

        try:
            check_transfer(cfg.encoder, cfg.hidden_size)
        except ValueError as exc:
            exc.field = "encoder"  # type: ignore[attr-defined]
            raise
    return note
