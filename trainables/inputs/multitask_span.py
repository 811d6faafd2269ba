"""The inputs of `multitask_span` before a run. `check` reads the labeled windows and their
expansion spans (ValueError naming the file and rows; `validate`, and `run` before Ray starts) and
says how they split into training, validation and test windows by time; `preflight` shrinks them
for `orchestrator preflight`."""

from __future__ import annotations

from trainables.configs.multitask_span import Config
from trainables.data import ohlc
from trainables.data.folds import split_note, time_blocks
from trainables.data.labeled import load_spans

CHECK_FIELDS = ("window_length", "val_fraction", "test_fraction")  # what `check` reads besides the data


def preflight(config: dict, workdir) -> dict:
    """Overrides for `orchestrator preflight`: two epochs on the first windows, every diagnostic on."""
    data = ohlc.head(config["data"], 40, workdir, config.get("window_length", 105), labeled=True)
    return {"data": data, "epochs": 2, "checkpoint_epoch_interval": 1, "gradient_stats_interval": 1}


def check(cfg: Config) -> str:
    """Read the data (ValueError naming file and rows); a note on how the windows are split."""
    windows, *_ = load_spans(cfg.data, cfg.window_length)
    line, blocks = time_blocks(windows, cfg.split_fractions(len(windows)), cfg.window_length)
    return f"{cfg.data}: {split_note(line, len(windows), blocks, ('train', 'val', 'test'))}"
