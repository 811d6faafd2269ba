"""`multitask_span`'s labeled windows as features and targets on the device, split into train,
validation and test blocks by time (`trainables/data/folds.py`: no window of one block overlaps
another's), standardised with the training windows' statistics."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainables.configs.multitask_span import Config
from trainables.data import span_features
from trainables.data.folds import split_note, time_blocks
from trainables.data.labeled import load_spans
from trainables.data.span_targets import Batch


@dataclass
class SpanData:
    """The trial's windows as features and targets on the device, split train / val / test by time."""

    train: Batch
    val: Batch
    test: Batch
    raw_by_phase: dict[str, torch.Tensor]  # unstandardised features of train and val (feature_stats.csv)
    mean: torch.Tensor  # the standardiser, from the training windows
    std: torch.Tensor
    classes: list[str]
    meta: dict  # what metadata.json says of the data


def load_data(cfg: Config, device: torch.device) -> SpanData:
    """Features of every window (computed once, on the device), standardised with the training
    windows' statistics, and the targets of each block."""
    windows, classes, y, starts, ends = load_spans(cfg.data, cfg.window_length)
    line, (train_idx, val_idx, test_idx) = time_blocks(windows, cfg.split_fractions(len(windows)), cfg.window_length)
    raw = span_features.compute(torch.as_tensor(windows.ohlc, device=device))
    on_device = {"train": torch.as_tensor(train_idx, device=device), "val": torch.as_tensor(val_idx, device=device)}
    mean, std = span_features.standardiser(raw[on_device["train"]])
    feats = (raw - mean) / std

    def subset(idx):
        return Batch(
            feats[torch.as_tensor(idx, device=device)],
            torch.as_tensor(y[idx], device=device),
            torch.as_tensor(starts[idx], device=device),
            torch.as_tensor(ends[idx], device=device),
            cfg,
        )

    raw_by_phase = {phase: raw[i] for phase, i in on_device.items()}
    meta = {
        "source": cfg.data,
        "windows": len(windows),
        "train": len(train_idx),
        "val": len(val_idx),
        "test": len(test_idx),
        "window_length": cfg.window_length,
        "split": split_note(line, len(windows), (train_idx, val_idx, test_idx), ("train", "val", "test")),
        "overlap": line.describe(cfg.window_length),
        "features": list(span_features.FEATURES),
        "class_counts": {c: int((y == i).sum()) for i, c in enumerate(classes)},
    }
    return SpanData(subset(train_idx), subset(val_idx), subset(test_idx), raw_by_phase, mean, std, classes, meta)
