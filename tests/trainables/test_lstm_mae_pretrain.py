"""The pretraining trainable without Ray (LocalSession): learning, resume, divergence, export."""

from __future__ import annotations

import math

import pytest
import torch

from trainables import lstm_mae_pretrain as mae
from trainables.models import encoders
from trainables.runtime.session import LocalSession

SMALL = {
    "data": "synthetic:ohlc?n=400&length=60&seed=0",
    "window_length": 60,
    "hidden_size": 16,
    "batch_size": 64,
    "aug_multiplier": 1,
    "lr": 3e-3,
    "patch_len": 12,
    "early_stopping_patience": None,
}


def test_beats_linear_interpolation_on_synthetic_data(tmp_path):
    session = LocalSession(tmp_path)
    cfg = dict(
        SMALL,
        data="synthetic:ohlc?n=1500&length=60&seed=0",
        epochs=12,
        hidden_size=48,
        mask_strategy="random",
        aug_multiplier=0,
        seed=0,
    )
    final = mae.train(cfg, session)
    first = session.metrics[0]
    assert final["val/masked_mse"] < 0.85 * final["val/interp_mse"], final
    assert final["val/masked_mse"] < first["val/masked_mse"]


def test_seeded_runs_are_deterministic_and_pinned(tmp_path):
    cfg = dict(SMALL, epochs=2, seed=7, mask_strategy="block")
    a, b = LocalSession(tmp_path / "a"), LocalSession(tmp_path / "b")
    mae.train(cfg, a)
    mae.train(cfg, b)
    losses = [m["train/loss"] for m in a.metrics]
    assert losses == [m["train/loss"] for m in b.metrics]
    # regression pin of the first epoch's loss (seeded); update deliberately if the method changes
    assert losses[0] == pytest.approx(0.03173, rel=0.02)


def test_resume_continues_the_epoch_counter(tmp_path):
    session = LocalSession(tmp_path, checkpoint_every=1)
    mae.train(dict(SMALL, epochs=2), session)
    assert [m["epoch"] for m in session.metrics] == [1, 2]
    # same folder, more epochs: resumes from the checkpoint of epoch 2
    resumed = LocalSession(tmp_path, checkpoint_every=1)
    mae.train(dict(SMALL, epochs=4), resumed)
    assert [m["epoch"] for m in resumed.metrics] == [3, 4]


def test_diverged_status_from_poisoned_data(tmp_path, monkeypatch):
    real = mae.masking.masked_mse
    calls = {"n": 0}

    def poisoned(pred, target, mask):
        calls["n"] += 1
        loss = real(pred, target, mask)
        return loss * float("nan") if calls["n"] > 8 else loss

    monkeypatch.setattr(mae.masking, "masked_mse", poisoned)
    session = LocalSession(tmp_path)
    final = mae.train(dict(SMALL, epochs=5, aug_multiplier=0), session)
    assert final["diverged"] is True and session.metrics[-1]["epoch"] == 2
    assert all(not m["diverged"] for m in session.metrics[:-1])
    assert session.checkpoints(), "the last good checkpoint is kept"


def test_encoder_export_has_hparams_and_loads_safely(tmp_path):
    session = LocalSession(tmp_path)
    mae.train(dict(SMALL, epochs=1), session)
    exported = encoders.load_export(tmp_path / encoders.ENCODER_FILE)
    assert exported["hparams"] == {"input_size": 4, "hidden_size": 16, "num_layers": 1, "bidirectional": True}
    assert exported["state_dict"]["weight_ih_l0"].shape == (64, 4)
    assert "weight_hh_l0_reverse" in exported["state_dict"]
    lstm = torch.nn.LSTM(4, 16, batch_first=True, bidirectional=True)
    lstm.load_state_dict(exported["state_dict"])
    ckpt = session.checkpoints()[-1]
    assert (ckpt / "state.pt").exists() and (ckpt / encoders.ENCODER_FILE).exists()
    assert (tmp_path / "metadata.json").exists() and (tmp_path / "metrics.csv").exists()


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    from trainables.runtime import checkpoints

    bad = tmp_path / "state.pt"
    bad.write_bytes(b"\x80\x02garbage")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        checkpoints.load(bad)


def test_split_purges_windows_overlapping_validation():
    import numpy as np

    from trainables.data.folds import time_blocks
    from trainables.data.ohlc import Windows

    starts = np.arange(0, 200, 10)  # windows of 50 bars every 10 bars overlap
    w = Windows(np.zeros((20, 50, 4), np.float32), np.array([str(s) for s in starts]), starts)
    _, (train, val) = time_blocks(w, (0.2,), 50)
    assert len(val) == 4
    assert (starts[train] + 50 <= starts[val].min()).all()
    assert math.isclose(len(train), 12)


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    session = LocalSession(tmp_path, checkpoint_every=1, keep=3)
    mae.train(dict(SMALL, epochs=3), session)
    latest = session.checkpoints()[-1] / "state.pt"
    latest.write_bytes(latest.read_bytes()[:100])  # truncated, as by a crash mid-write
    resumed = LocalSession(tmp_path, checkpoint_every=1, keep=3)
    mae.train(dict(SMALL, epochs=4), resumed)
    assert [m["epoch"] for m in resumed.metrics] == [3, 4]  # epoch 3 redone from epoch 2's checkpoint
    assert "skipping unreadable checkpoint" in capsys.readouterr().out


def test_finished_trial_restored_returns_without_retraining(tmp_path):
    session = LocalSession(tmp_path)
    mae.train(dict(SMALL, epochs=2), session)
    again = LocalSession(tmp_path)
    final = mae.train(dict(SMALL, epochs=2), again)
    assert again.metrics == [] and final["epoch"] == 2


def test_data_and_validation_masks_do_not_depend_on_the_device():
    """Splits, normalisation, masks and the interpolation baseline are computed on the CPU and
    then moved: a device whose values cannot even be read ("meta") gets the same shapes and the
    same baseline, so a CUDA trial is scored on the CPU trial's masks (equal on CUDA below)."""
    cfg = mae.Config.model_validate(dict(SMALL, mask_strategy="block"))
    cpu = mae.load_windows(cfg, torch.device("cpu"))
    meta = mae.load_windows(cfg, torch.device("meta"))
    assert meta.val_mask.is_meta and meta.val_mask.shape == cpu.val_mask.shape
    assert meta.interp_mse == cpu.interp_mse
    if torch.cuda.is_available():
        gpu = mae.load_windows(cfg, torch.device("cuda"))
        assert torch.equal(gpu.val_mask.cpu(), cpu.val_mask) and torch.equal(gpu.common_mask.cpu(), cpu.common_mask)
        assert torch.equal(gpu.val.cpu(), cpu.val)
