"""The inputs of `lstm_mae_pretrain` before a run. `check` reads the unlabeled windows (ValueError
naming the file and rows; `validate`, and `run` before Ray starts) and says how they split into
training and validation windows by time; `preflight` shrinks them for `orchestrator preflight`."""

from __future__ import annotations

from trainables.configs.lstm_mae_pretrain import Config
from trainables.data import ohlc
from trainables.data.folds import split_note, time_blocks

CHECK_FIELDS = ("window_length", "val_fraction")  # what `check` reads besides the data


def preflight(config: dict, workdir) -> dict:
    """Overrides for `orchestrator preflight`: one short epoch on the first windows."""
    data = ohlc.head(config["data"], 64, workdir, config.get("window_length", 105), labeled=False)
    return {"data": data, "epochs": 1, "aug_multiplier": min(config.get("aug_multiplier", 4), 1)}


def check(cfg: Config) -> str:
    """Read the data (ValueError naming file and rows); a note on how the windows are split."""
    windows = ohlc.load_windows(cfg.data, cfg.window_length)
    line, blocks = time_blocks(windows, (cfg.val_fraction,), cfg.window_length)
    return f"{cfg.data}: {split_note(line, len(windows), blocks, ('train', 'val'))}"
