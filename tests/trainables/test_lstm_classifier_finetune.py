"""Fine-tuning classifier: encoder transfer, freezing, folds, metrics, out-of-fold accuracy, resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

from trainables import lstm_classifier_finetune as ft
from trainables.configs.lstm_classifier_finetune import Config
from trainables.data.folds import make_folds
from trainables.metrics.classification import classification_report
from trainables.models import encoders
from trainables.runtime.session import LocalSession

DATA = "synthetic:ohlc?n=200&length=60&seed=1&labeled=1"
SMALL = {"data": DATA, "window_length": 60, "hidden_size": 16, "num_heads": 4, "folds": 3, "epochs": 3}


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("enc") / "encoder.pt"
    torch.manual_seed(0)
    encoders.export(encoders.BiLSTMEncoder(4, 16, 1), path, {"trainable": "test"})
    return path


def test_transfer_copies_exactly_the_forward_direction_of_layer0(encoder_file):
    source = encoders.load_export(encoder_file)["state_dict"]
    model, info = ft.build_model(Config(**SMALL, encoder=str(encoder_file)), 2, torch.device("cpu"))
    for name in encoders.FORWARD_LAYER0:
        assert torch.equal(getattr(model.lstm, name), source[name])
        assert not torch.equal(getattr(model.lstm, name), source[name + "_reverse"])
    assert info["hparams"]["hidden_size"] == 16
    # a checkpoint folder holding encoder.pt works too
    ft.build_model(Config(**SMALL, encoder=str(encoder_file.parent)), 2, torch.device("cpu"))


def test_shape_mismatch_names_both_shapes(encoder_file):
    with pytest.raises(ValueError, match=r"weight_ih_l0 has shape \(64, 4\) but this model's LSTM expects \(128, 4\)"):
        ft.build_model(Config(**dict(SMALL, hidden_size=32), encoder=str(encoder_file)), 2, torch.device("cpu"))


def test_frozen_encoder_does_not_change_during_frozen_epochs(encoder_file):
    cfg = Config(
        **dict(SMALL, epochs=4, early_stopping_patience=None), encoder=str(encoder_file), freeze_encoder_epochs=2
    )
    model, _ = ft.build_model(cfg, 2, torch.device("cpu"))
    torch.manual_seed(0)
    x, y = torch.randn(40, 60, 4), torch.randint(0, 2, (40,))
    snapshots = []
    start_lstm = {k: v.clone() for k, v in model.lstm.state_dict().items()}
    start_head = model.head[1].weight.detach().clone()

    def on_epoch(epoch, m):
        snapshots.append({k: v.clone() for k, v in m.lstm.state_dict().items()})

    ft.fit_fold(model, (x[:30], y[:30]), (x[30:], y[30:]), cfg, n_classes=2, transferred=True, on_epoch=on_epoch)
    for epoch in (0, 1):  # frozen
        assert all(torch.equal(snapshots[epoch][k], start_lstm[k]) for k in start_lstm)
    assert not all(torch.equal(snapshots[3][k], start_lstm[k]) for k in start_lstm)  # unfrozen after
    assert not torch.equal(model.head[1].weight, start_head)  # the rest trained all along


def test_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    pred = np.where(rng.random(200) < 0.7, y, rng.integers(0, 3, 200))
    rep = classification_report(y, pred, ["a", "b", "c"])
    assert rep["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert rep["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert rep["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    per_class = recall_score(y, pred, average=None)
    assert [rep[f"acc/{c}"] for c in "abc"] == pytest.approx(list(per_class))
    collapsed = classification_report(y, np.zeros_like(y), ["a", "b", "c"])
    assert collapsed["class_collapse"] is True and rep["class_collapse"] is False


def test_stratified_folds_partition_and_keep_class_mix():
    y = np.array([0] * 30 + [1] * 10)
    folds = make_folds(y, 5, seed=0)
    vals = np.concatenate([v for _, v in folds])
    assert sorted(vals) == list(range(40))
    for tr, va in folds:
        assert not set(tr) & set(va)
        assert (y[va] == 1).sum() == 2 and (y[va] == 0).sum() == 6


def test_blocked_folds_never_share_bars_between_train_and_validation():
    starts = np.arange(0, 500, 5)  # 100 windows of 40 bars, heavily overlapping
    folds = make_folds(np.zeros(100, int), 4, 0, starts, 40)
    for tr, va in folds:
        val_bars = set()
        for s in starts[va]:
            val_bars |= set(range(s, s + 40))
        for s in starts[tr]:
            assert not set(range(s, s + 40)) & val_bars
        assert len(tr) > 0


def test_out_of_fold_balanced_accuracy_on_planted_labels(tmp_path):
    session = LocalSession(tmp_path)
    final = ft.train(
        {
            "data": "synthetic:ohlc?n=240&length=105&seed=1&labeled=1",
            "hidden_size": 32,
            "num_heads": 4,
            "folds": 4,
            "epochs": 15,
            "seed": 0,
        },
        session,
    )
    assert final["oof/windows"] == 240
    assert final["oof/balanced_accuracy"] >= 0.85, final
    assert final["class_collapse"] is False
    oof = pd.read_parquet(tmp_path / "oof_predictions.parquet")
    assert len(oof) == 240 and set(oof["fold"]) == {0, 1, 2, 3}
    assert {"prob_consolidation", "prob_retracement"} <= set(oof.columns)
    assert (oof["label"] == oof["prediction"]).mean() == pytest.approx(final["oof/accuracy"])


def test_resume_continues_at_the_next_fold(tmp_path):
    import shutil

    first = LocalSession(tmp_path, keep=None)
    ft.train(dict(SMALL, folds=3), first)
    assert [m["fold"] for m in first.metrics] == [1, 2, 3]
    assert "oof/balanced_accuracy" not in first.metrics[1] and "oof_so_far/balanced_accuracy" in first.metrics[1]
    for ckpt in first.checkpoints()[1:]:  # as if the trial died right after fold 1
        shutil.rmtree(ckpt)
    again = LocalSession(tmp_path)
    final = ft.train(dict(SMALL, folds=3), again)
    assert [m["fold"] for m in again.metrics] == [2, 3]
    assert final["oof/windows"] == 200
    # the resumed trial ends exactly where an uninterrupted one does: same inner splits (seeded
    # per fold), same torch and numpy random streams (restored from the checkpoint)
    whole = ft.train(dict(SMALL, folds=3), LocalSession(tmp_path / "whole"))
    assert {k: v for k, v in final.items() if k.startswith("oof/")} == {
        k: v for k, v in whole.items() if k.startswith("oof/")
    }
    resumed = pd.read_parquet(tmp_path / "oof_predictions.parquet")
    uninterrupted = pd.read_parquet(tmp_path / "whole" / "oof_predictions.parquet")
    pd.testing.assert_frame_equal(resumed, uninterrupted)


def test_every_random_generator_round_trips_through_a_checkpoint(tmp_path):
    import random

    from trainables.runtime import checkpoints
    from trainables.runtime.reproducibility import rng_state, seed_everything, set_rng_state

    seed_everything(3)
    np.random.rand(5), random.random(), np.random.randn()  # mid-stream, with a cached gaussian
    checkpoints.save({"rng": rng_state()}, tmp_path / "s.pt")
    expected = (np.random.rand(3).tolist(), np.random.randn(), random.random(), torch.rand(2).tolist())
    seed_everything(99)
    set_rng_state(checkpoints.load(tmp_path / "s.pt")["rng"])
    assert (np.random.rand(3).tolist(), np.random.randn(), random.random(), torch.rand(2).tolist()) == expected
