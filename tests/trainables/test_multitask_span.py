"""The multi-task span trainable: features, uncertainty weighting, CRF, diagnostics, learning."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score, precision_score, recall_score

from trainables import multitask_span as mt
from trainables.configs.multitask_span import Config
from trainables.data import span_features, span_targets
from trainables.data import synthetic_ohlc as synthetic
from trainables.data.folds import time_blocks
from trainables.data.labeled import load_spans
from trainables.data.ohlc import windows_table
from trainables.evaluation import span as span_eval
from trainables.inputs import multitask_span as mt_inputs
from trainables.losses.uncertainty import TaskWeighting
from trainables.metrics import span as span_metrics
from trainables.metrics.span_diagnostics import TABLES
from trainables.models.span_model import SpanModel
from trainables.runtime.session import LocalSession

F = {name: i for i, name in enumerate(span_features.FEATURES)}


def _window(bars: list[tuple[float, float, float, float]]) -> torch.Tensor:
    return torch.tensor([bars], dtype=torch.float64)


# --- features -------------------------------------------------------------------------------


def test_price_features_follow_their_formulas():
    x = _window([(10, 12, 9, 11), (11, 13, 10, 12), (12, 12.5, 8, 9)])
    f = span_features.compute(x)[0].double()
    atr = np.mean([3, 3, 4.5])
    assert f[:, F["open_rel"]].tolist() == pytest.approx([0, 1 / atr, 2 / atr], abs=1e-6)
    assert f[:, F["high_rel"]].tolist() == pytest.approx([2 / atr, 3 / atr, 2.5 / atr], abs=1e-6)
    assert f[:, F["low_rel"]].tolist() == pytest.approx([-1 / atr, 0, -2 / atr], abs=1e-6)
    assert f[:, F["close_rel"]].tolist() == pytest.approx([1 / atr, 2 / atr, -1 / atr], abs=1e-6)
    assert f[:, F["body"]].tolist() == pytest.approx([1 / atr, 1 / atr, -3 / atr], abs=1e-6)
    assert f[:, F["upper_wick"]].tolist() == pytest.approx([1 / atr, 1 / atr, 0.5 / atr], abs=1e-6)
    assert f[:, F["lower_wick"]].tolist() == pytest.approx([1 / atr, 1 / atr, 1 / atr], abs=1e-6)
    r = np.array([0, math.log(12 / 11), math.log(9 / 12)])
    assert f[:, F["log_return"]].tolist() == pytest.approx((r / np.std(r[1:], ddof=1)).tolist(), abs=1e-5)


def test_features_are_free_of_price_level_and_scale():
    x = torch.as_tensor(synthetic.generate(4, 60, seed=1)["ohlc"])
    a = span_features.compute(x)
    b = span_features.compute(x * 37.5)
    assert torch.allclose(a, b, atol=1e-4)


def test_expansion_proxy_is_range_over_its_recent_mean():
    ranges = [1, 1, 1, 1, 3, 1]
    x = _window([(10, 10 + r, 10 - 0 * r, 10) for r in ranges])  # o = c = low, high = low + r
    x[..., 2] = 10.0
    f = span_features.compute(x)[0, :, F["expansion_proxy"]]
    assert f[0] == pytest.approx(1.0)  # no earlier bar
    assert f[4] == pytest.approx(3.0)  # 3 / mean(1, 1, 1, 1)
    assert f[5] == pytest.approx(1 / 1.4)  # 1 / mean(1, 1, 1, 1, 3)
    long = _window([(10, 10 + (50 if i == 30 else 1), 10, 10) for i in range(31)])
    assert span_features.compute(long)[0, 30, F["expansion_proxy"]] == pytest.approx(span_features.EXPANSION_CLIP)


def test_swing_features_are_confirmed_k_bars_later_and_never_look_ahead():
    k = span_features.SWING_ORDER
    highs = [10, 11, 12, 15, 12, 11, 10, 11, 12, 13, 14, 15, 16]
    x = _window([(h - 1, h, h - 2, h - 1) for h in highs])
    f = span_features.compute(x)[0]
    atr = 2.0
    peak = 3  # the swing high at bar 3 (15), confirmed at bar 3 + k
    for t in range(peak + k, 10):
        assert f[t, F["swing_high_dist"]] == pytest.approx((highs[t] - 1 - 15) / atr, abs=1e-5)
    # before confirmation the reference is the running high
    assert f[peak + k - 1, F["swing_high_dist"]] == pytest.approx((highs[peak + k - 1] - 1 - 15) / atr, abs=1e-5)
    assert f[peak + k, F["bars_since_swing"]] * len(highs) == pytest.approx(k)


def _scales(x: torch.Tensor) -> torch.Tensor:
    """(N, 12) the window-wide unit of each feature, from the module docstring's formulas: atr
    for the price distances, the std of log returns for log_return, 1 for the ratios."""
    o, h, lo, c = x.double().unbind(-1)
    atr = (h - lo).mean(dim=1)
    ret = torch.log(c[:, 1:] / c[:, :-1]).std(dim=1)
    ones = torch.ones_like(atr)
    return torch.stack([atr] * 7 + [ret, atr, atr, ones, ones], dim=1)


def test_no_feature_looks_ahead():
    """Every one of the 12 features at bar t depends on bars 0..t only, apart from the window-wide
    unit it is expressed in (atr, return std: the level/scale normalisation, which is of the whole
    window by design). Changing every bar from 9 on leaves all features at bars 0..8 equal once
    each is multiplied back by its unit."""
    x = torch.as_tensor(synthetic.generate(6, 60, seed=3)["ohlc"])
    changed = x.clone()
    gen = torch.Generator().manual_seed(0)
    changed[:, 9:] *= torch.exp(0.05 * torch.randn(6, 51, 1, generator=gen, dtype=torch.float64))  # keeps OHLC order
    changed[:, 9:, 1] *= 1.01  # and highs move
    f, g = span_features.compute(x).double(), span_features.compute(changed).double()
    a, b = f * _scales(x)[:, None], g * _scales(changed)[:, None]
    assert not torch.allclose(f[:, 9:], g[:, 9:])  # the change is visible later on
    for name, i in F.items():
        assert torch.allclose(a[:, :9, i], b[:, :9, i], atol=1e-5), f"{name} at bars 0..8 sees bars >= 9"
    assert _scales(x)[0, 0] != _scales(changed)[0, 0]  # the unit itself did change


def test_features_have_the_documented_shape_and_are_finite():
    x = torch.as_tensor(synthetic.generate(8, 105, seed=0)["ohlc"])
    f = span_features.compute(x)
    assert f.shape == (8, 105, 12) and len(span_features.FEATURES) == 12
    assert torch.isfinite(f).all()
    for name in span_features.FEATURES:
        assert f"| {name} |" in span_features.__doc__, f"{name} needs its formula in the module docstring"


# --- loss weighting, targets, metrics ---------------------------------------------------------


def test_uncertainty_loss_equals_the_formula_on_hand_values():
    w = TaskWeighting(
        {"type": "classification", "ptr": "regression", "span": "classification", "countdown": "regression"}
    )
    with torch.no_grad():
        w.log_var.copy_(torch.tensor([0.5, -1.0, 0.0, 2.0]))
    losses = torch.tensor([1.2, 0.3, 0.7, 2.0])
    expected = (
        (1.0 * math.exp(-0.5) * 1.2 + 0.25)
        + (0.5 * math.exp(1.0) * 0.3 - 0.5)
        + (1.0 * 0.7 + 0.0)
        + (0.5 * math.exp(-2.0) * 2.0 + 1.0)
    )
    assert float(w(losses).detach()) == pytest.approx(expected, rel=1e-6)
    sig = w.sigmas()
    assert sig.tolist() == pytest.approx([math.exp(0.25), math.exp(-0.5), 1.0, math.exp(1.0)], rel=1e-6)
    raw = torch.tensor([math.exp(-0.5), 0.5 * math.exp(1.0), 1.0, 0.5 * math.exp(-2.0)])
    assert w.shares().tolist() == pytest.approx((raw / raw.sum()).tolist(), rel=1e-6)
    fixed = TaskWeighting({"a": "regression", "b": "classification"}, "fixed", {"a": 2.0, "b": 0.5})
    assert float(fixed(torch.tensor([1.0, 4.0]))) == pytest.approx(4.0)
    assert not fixed.log_var.requires_grad


def test_span_metrics_equal_scikit_learn_per_bar():
    gen = torch.Generator().manual_seed(5)
    prob = torch.rand(30, 50, generator=gen)
    truth = (torch.rand(30, 50, generator=gen) < 0.25).float()
    for threshold in (0.2, 0.5, 0.85):
        pred = (prob >= threshold).ravel().numpy()
        m = span_metrics.at_threshold(prob, truth, threshold)
        assert m["span_precision"] == pytest.approx(precision_score(truth.ravel().numpy(), pred))
        assert m["span_recall"] == pytest.approx(recall_score(truth.ravel().numpy(), pred))
        assert m["span_f1"] == pytest.approx(f1_score(truth.ravel().numpy(), pred))
    decoded = span_metrics.decoded(prob > 0.6, truth)
    assert decoded["span_f1"] == pytest.approx(f1_score(truth.ravel().numpy(), (prob > 0.6).ravel().numpy()))


def test_soft_span_target_and_metrics():
    hard, soft = span_targets.span_masks(torch.tensor([2]), torch.tensor([4]), 8, softness=1.0)
    assert hard[0].tolist() == [0, 0, 1, 1, 1, 0, 0, 0]
    assert soft[0, 3] > soft[0, 2] > 0.5 > soft[0, 1] > soft[0, 0]
    assert torch.equal(span_targets.span_masks(torch.tensor([2]), torch.tensor([4]), 8, 0.0)[1], hard)
    prob = torch.tensor([[0.1, 0.6, 0.9, 0.8, 0.4, 0.2, 0.1, 0.7]])
    m = span_metrics.at_threshold(prob, hard, 0.5)  # predicted bars 1, 2, 3, 7; true 2, 3, 4
    assert m["span_precision"] == pytest.approx(2 / 4) and m["span_recall"] == pytest.approx(2 / 3)
    assert m["span_f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    rows = span_metrics.sweep(prob, hard)
    assert [r["threshold"] for r in rows][0] == 0.1 and rows[-1]["threshold"] == 0.9 and len(rows) == 17
    for r in rows:
        assert r["span_f1"] == pytest.approx(span_metrics.at_threshold(prob, hard, r["threshold"])["span_f1"])
    stats = span_metrics.probability_stats(prob, hard)
    assert stats["separation"] == pytest.approx(np.mean([0.9, 0.8, 0.4]) - np.mean([0.1, 0.6, 0.2, 0.1, 0.7]))
    assert span_metrics.spans_from_mask(torch.tensor([[0, 1, 1, 0, 1], [1, 1, 1, 1, 1]]).bool()) == [
        [(1, 2), (4, 4)],
        [(0, 4)],
    ]


# --- training ---------------------------------------------------------------------------------


def _train(tmp_path, name: str, **overrides) -> tuple[dict, LocalSession]:
    cfg = {
        "data": "synthetic:ohlc?n=120&labeled=1&seed=4",
        "epochs": 4,
        "hidden_size": 24,
        "seed": 0,
        "checkpoint_epoch_interval": 2,
        "gradient_stats_interval": 2,
        **overrides,
    }
    session = LocalSession(tmp_path / name, checkpoint_every=2)
    return mt.train(cfg, session), session


def test_every_diagnostic_file_has_the_documented_columns(tmp_path):
    metrics, session = _train(tmp_path, "diag", ensemble_last_k=2)
    folder = session.artifact_dir
    for table, columns in TABLES.items():
        df = pd.read_csv(folder / table)
        if columns is not None:
            assert list(df.columns) == columns, table
    assert pd.read_csv(folder / "epoch_metrics.csv")["epoch"].tolist() == [1, 2, 3, 4]
    lc = pd.read_csv(folder / "loss_components.csv")
    assert sorted(set(lc["phase"])) == ["train", "val"] and len(lc) == 8
    fs = pd.read_csv(folder / "feature_stats.csv")
    assert sorted(set(fs["epoch"])) == [1] and set(fs["feature_name"]) == set(
        span_features.FEATURES
    )  # fixed inputs: once
    gs = pd.read_csv(folder / "gradient_stats.csv")
    assert gs["epoch"].tolist() == [1, 2, 4] and "lstm.weight_ih_l0" in gs.columns and (gs["total_grad_norm"] > 0).all()
    up = pd.read_csv(folder / "uncertainty_params.csv")
    shares = up[[f"weight_{t}" for t in ("type", "ptr", "span", "countdown")]].sum(axis=1)
    assert np.allclose(shares, 1.0)
    assert (folder / "best_model.pt").exists() and (folder / "checkpoint_epoch_2.pt").exists()
    assert (folder / "checkpoint_epoch_4.pt").exists() and (folder / "training.log").read_text().count("Epoch") == 4
    sweep = pd.read_csv(folder / "threshold_sweep.csv")
    assert len(sweep) == 17 and metrics["final/threshold"] == sweep.loc[sweep["span_f1"].idxmax(), "threshold"]
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["parameters"]["total"] >= meta["parameters"]["trainable"] > 0
    assert meta["data"]["train"] + meta["data"]["val"] + meta["data"]["test"] == 120 and meta["data"]["test"] == 24
    diag = json.loads((folder / "diagnostics.json").read_text())
    assert {c["level"] for c in diag["criteria"]} == {"minimum", "strong", "exceptional"}
    assert set(diag["figures"]) == {
        "loss_curves.png",
        "loss_components.png",
        "span_f1.png",
        "uncertainty.png",
        "span_probabilities.png",
    }
    assert all((folder / f).stat().st_size > 1000 for f in diag["figures"])
    assert metrics["ensemble/members"] == 2


def test_sigmas_move_during_training_and_fixed_weights_do_not(tmp_path):
    _, s = _train(tmp_path, "unc", epochs=6, checkpoint_epoch_interval=None, plots=False)
    up = pd.read_csv(s.artifact_dir / "uncertainty_params.csv")
    sig = up[[c for c in up.columns if c.startswith("sigma_")]]
    moved = (sig - 1.0).abs()  # sigma starts at 1 (s = log sigma^2 = 0)
    assert (moved.iloc[-1] > 0.005).all() and (moved.iloc[-1] > moved.iloc[0]).all()
    _, s = _train(
        tmp_path,
        "fixed",
        epochs=3,
        loss_weighting="fixed",
        checkpoint_epoch_interval=None,
        plots=False,
        loss_weights={"type": 2.0, "ptr": 1.0, "span": 1.0, "countdown": 0.0},
    )
    up = pd.read_csv(s.artifact_dir / "uncertainty_params.csv")
    assert up["sigma_type"].eq(1.0).all() and up["weight_type"].eq(0.5).all() and up["weight_countdown"].eq(0).all()


def test_crf_path_trains_and_decodes_valid_spans(tmp_path):
    metrics, session = _train(tmp_path, "crf", use_crf=True, epochs=3, plots=False)
    assert not metrics["diverged"]
    state = torch.load(session.artifact_dir / "best_model.pt", weights_only=True)
    assert "crf.transitions" in state["model"]
    cfg = Config(data="synthetic:ohlc?n=120&labeled=1&seed=4", hidden_size=24, use_crf=True, epochs=3)
    model = SpanModel(12, 2, cfg)
    model.load_state_dict(state["model"])
    # the reported Viterbi span F1 is the per-bar F1 of the best model's decoded validation spans
    windows, _, _, starts, ends = load_spans(cfg.data, cfg.window_length)
    _, (_, val_idx, _) = time_blocks(windows, cfg.split_fractions(len(windows)), cfg.window_length)
    feats = (span_features.compute(torch.as_tensor(windows.ohlc[val_idx])) - state["feature_mean"]) / state[
        "feature_std"
    ]
    model.eval()
    with torch.no_grad():
        decoded = model.decode(model(feats)["span"])
    hard, _ = span_targets.span_masks(torch.as_tensor(starts[val_idx]), torch.as_tensor(ends[val_idx]), 105, 0)
    assert metrics["final/val_crf_span_f1"] == pytest.approx(f1_score(hard.ravel().numpy(), decoded.ravel().numpy()))
    paths = model.decode(torch.randn(5, 30))
    assert paths.dtype == torch.bool and paths.shape == (5, 30)
    for spans in span_metrics.spans_from_mask(paths):
        assert all(0 <= s <= e < 30 for s, e in spans)
    # the CRF log-likelihood is part of the span loss, and its transitions learn: they moved away
    # from the initialisation (pytorch-crf draws them from U(-0.1, 0.1): non-zero from the start)
    from trainables.runtime.reproducibility import seed_everything

    seed_everything(0)
    initial = mt.build(cfg, 2, torch.device("cpu"))[0].crf.transitions.detach()
    assert (state["model"]["crf.transitions"] - initial).abs().max() > 1e-3


@pytest.mark.parametrize("use_crf", [False, True])
def test_learns_planted_spans(tmp_path, use_crf):
    metrics, _ = _train(
        tmp_path,
        f"learn{use_crf}",
        data="synthetic:ohlc?n=240&labeled=1&seed=11",
        epochs=25,
        hidden_size=96,
        seed=42,
        use_crf=use_crf,
        checkpoint_epoch_interval=None,
        plots=False,
    )
    # scored on the test block (48 windows that chose neither the epoch nor the threshold);
    # measured 2026-12-01: F1 0.953 / 0.955 (CRF), separation 0.873, pointer MAE 0.035
    assert metrics["final/test_span_f1"] >= 0.90
    assert metrics["final/test_separation"] >= 0.80
    assert metrics["final/test_pointer_mae"] <= 0.05
    if use_crf:
        assert metrics["final/test_crf_span_f1"] >= 0.90


def test_resume_continues_and_diagnostics_hold_each_epoch_once(tmp_path):
    class Interrupt(Exception):
        pass

    class Failing(LocalSession):
        def report(self, metrics, checkpoint_dir=None):
            super().report(metrics, checkpoint_dir)
            if metrics["epoch"] == 3:
                raise Interrupt

    cfg = {
        "data": "synthetic:ohlc?n=80&labeled=1&seed=2",
        "epochs": 5,
        "hidden_size": 16,
        "seed": 1,
        "checkpoint_epoch_interval": None,
        "plots": False,
    }
    root = tmp_path / "resume"
    with pytest.raises(Interrupt):
        mt.train(cfg, Failing(root, checkpoint_every=2))
    assert pd.read_csv(root / "epoch_metrics.csv")["epoch"].tolist() == [1, 2, 3]
    resumed = LocalSession(root, checkpoint_every=2)
    metrics = mt.train(cfg, resumed)
    assert [m["epoch"] for m in resumed.metrics] == [3, 4, 5]  # restarted after the epoch-2 checkpoint
    assert pd.read_csv(root / "epoch_metrics.csv")["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert pd.read_csv(root / "loss_components.csv")["epoch"].tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert "resumed after epoch 2" in (root / "training.log").read_text()
    fresh = mt.train(cfg, LocalSession(tmp_path / "fresh", checkpoint_every=2))
    assert metrics["val/loss"] == pytest.approx(fresh["val/loss"], rel=1e-5)  # resume is exact


def test_non_finite_loss_ends_the_trial_as_diverged(tmp_path, monkeypatch):
    real, calls = mt.task_losses, {"n": 0}

    def poisoned(*args):
        calls["n"] += 1
        losses = real(*args)
        return losses * float("nan") if calls["n"] > 8 else losses  # NaN from the 3rd epoch on

    monkeypatch.setattr(mt, "task_losses", poisoned)  # the training steps
    monkeypatch.setattr(span_eval, "task_losses", poisoned)  # validation
    metrics, session = _train(tmp_path, "nan", epochs=6, plots=False)  # 3 train batches + 1 val per epoch
    assert metrics["diverged"] is True and metrics["epoch"] == 3
    assert [m["epoch"] for m in session.metrics] == [1, 2, 3]
    assert len(session.checkpoints()) == 1  # the epoch-2 one; no NaN state saved
    assert "non-finite loss" in (session.artifact_dir / "training.log").read_text()


def test_bad_spans_are_rejected_with_the_rows(tmp_path):
    data = synthetic.generate(12, 40, seed=0)
    data["expansion_end"][[1, 4]] = data["expansion_start"][[1, 4]] - 1
    path = tmp_path / "bad.parquet"
    import pyarrow.parquet as pq

    pq.write_table(
        windows_table(
            data["ohlc"],
            list(data["window_id"]),
            label=data["label"],
            expansion_start=data["expansion_start"],
            expansion_end=data["expansion_end"],
        ),
        path,
    )
    with pytest.raises(ValueError, match=r"bad.parquet: rows 1, 4: expected 0 <= expansion_start <= expansion_end"):
        mt_inputs.check(Config(data=str(path), window_length=40))


# --- through the CLI --------------------------------------------------------------------------


@pytest.mark.e2e
def test_ablation_runs_through_the_cli_and_the_report_shows_criteria_and_plots(tmp_path, write_study):
    from tests.conftest import run_here

    study = write_study("""\
        # two arms of the ablation, tiny
        name: mt
        storage: ./runs
        defaults: {resources: {cpu: 1}, seeds: [3]}
        stages:
          ablation:
            trainable: multitask_span
            config: {data: "synthetic:ohlc?n=100&length=60&seed=5&labeled=1", window_length: 60, epochs: 4,
                     hidden_size: 16, checkpoint_epoch_interval: 2}
            variants:
              uncertainty: {loss_weighting: uncertainty}
              fixed_crf: {loss_weighting: fixed, use_crf: true}
            select: {metric: final/val_span_f1, mode: max}
    """)
    proc = run_here("run", study, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "4 epochs" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr
    assert "final.final/val_span_f1" in (tmp_path / "runs" / "mt" / "results.md").read_text()
    proc = run_here("report", tmp_path / "runs" / "mt", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = (tmp_path / "runs" / "mt" / "report" / "report.md").read_text()
    assert report.count("### ablation/") == 2 and "| strong | span_f1 > 0.3 |" in report
    assert "final/val_crf_span_f1" in report
    images = [
        line.split("](")[1].rstrip(")") for line in report.splitlines() if line.startswith("![") and "trials/" in line
    ]
    assert len(images) == 10 and all((tmp_path / "runs" / "mt" / "report" / p).exists() for p in images)
    trial = next(p.parent for p in (tmp_path / "runs" / "mt" / "ablation").glob("*/diagnostics.json"))
    proc = run_here("report", trial, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| minimum | val_loss_reduction >= 0.2 |" in (trial / "report.md").read_text()
