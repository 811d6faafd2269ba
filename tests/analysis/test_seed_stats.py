"""Aggregates and paired deltas checked against independent scipy/pandas computations."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from orchestrator.analysis import seed_stats, study_tables
from orchestrator.analysis.rendering import aggregate_latex, aggregate_markdown, latex_escape, paired_markdown


def _trials() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for variant, shift in (("base_line", 0.0), ("iso", 0.05)):
        for seed in (1, 2, 3):
            rows.append(
                {
                    "stage": "train",
                    "variant": variant,
                    "seed": seed,
                    "status": "done",
                    "best.val/acc": 0.7 + shift + 0.01 * seed + rng.normal(0, 0.01),
                    "final.val/loss": 0.5 - shift + rng.normal(0, 0.02),
                }
            )
    rows.append(
        {"stage": "train", "variant": "iso", "seed": 4, "status": "error", "best.val/acc": 0.0, "final.val/loss": 9.0}
    )
    return pd.DataFrame(rows)


def test_mean_std_ci_equal_scipy():
    df = _trials()
    agg = seed_stats.aggregate(df, ["best.val/acc", "final.val/loss"], ["stage", "variant"]).set_index("variant")
    for variant in ("base_line", "iso"):
        x = df[(df.variant == variant) & (df.status == "done")]["best.val/acc"].to_numpy()
        lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
        row = agg.loc[variant]
        assert row["n"] == 3  # the errored trial is left out
        assert row["best.val/acc:mean"] == pytest.approx(x.mean())
        assert row["best.val/acc:std"] == pytest.approx(pd.Series(x).std())
        assert row["best.val/acc:ci_low"] == pytest.approx(lo) and row["best.val/acc:ci_high"] == pytest.approx(hi)


def test_paired_delta_uses_matched_seeds():
    df = _trials()
    df = df[~((df.variant == "base_line") & (df.seed == 3))]  # baseline lacks seed 3: only 1, 2 pair
    pairs = seed_stats.paired(df, "base_line", ["best.val/acc"], ["stage", "variant"])
    row = pairs.iloc[0]
    assert row["variant"] == "iso" and row["n"] == 2 and row["seeds"] == "1,2"
    a = df[(df.variant == "iso") & df.seed.isin([1, 2])].sort_values("seed")["best.val/acc"].to_numpy()
    b = df[(df.variant == "base_line") & df.seed.isin([1, 2])].sort_values("seed")["best.val/acc"].to_numpy()
    d = a - b
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert row["best.val/acc:delta"] == pytest.approx(d.mean())
    assert row["best.val/acc:delta_ci_low"] == pytest.approx(lo) and row["best.val/acc:delta_ci_high"] == pytest.approx(
        hi
    )


def test_single_seed_has_no_interval_and_unknown_columns_are_errors():
    df = _trials()[lambda d: d.seed == 1]
    agg = seed_stats.aggregate(df, ["best.val/acc"], ["stage", "variant"])
    assert agg["n"].tolist() == [1, 1] and agg["best.val/acc:ci_low"].isna().all()
    from orchestrator.errors import UserError

    with pytest.raises(UserError, match="unknown column"):
        seed_stats.aggregate(df, ["best.nope"], ["stage", "variant"])
    with pytest.raises(UserError, match="no trials of variant 'zzz'"):
        seed_stats.paired(df, "zzz", ["best.val/acc"])


def test_a_baseline_whose_every_trial_failed_leaves_the_other_tables_written():
    """`compare: {baseline: base_line}` where every baseline trial failed: the paired table says
    so, row by row, and the study's tables are still built (a raise would lose them all)."""
    from orchestrator.analysis import study_tables

    df = _trials()
    df.loc[df["variant"] == "base_line", "status"] = "error"
    pairs = seed_stats.paired(df, "base_line", ["best.val/acc"])
    assert pairs["variant"].tolist() == ["iso"] and pairs["n"].tolist() == [0]
    assert "no successful trial of the baseline 'base_line'" in pairs["note"].iloc[0]
    record = {
        "stage": "pre",
        "select": {"metric": "val/acc", "mode": "max"},
        "compare": {"baseline": "base_line"},
        "trials": {
            f"t{i}": {
                "stage": "pre",
                "trial_id": f"t{i}",
                "name": f"pre/{v}/s{seed}",
                "variant": v,
                "seed": seed,
                "status": "error" if v == "base_line" else "done",
                "best": 0.5 + 0.01 * i,
                "metrics": {"val/acc": 0.5},
            }
            for i, (v, seed) in enumerate([(v, s) for v in ("base_line", "iso") for s in (1, 2, 3)])
        },
    }
    tables = study_tables.build({"pre": record})
    assert len(tables.trials) == 6 and not tables.aggregated["pre"].empty
    assert tables.paired["pre"]["n"].tolist() == [0]


def test_latex_is_balanced_escaped_and_bolds_the_best():
    agg = seed_stats.aggregate(_trials(), ["best.val/acc", "final.val/loss"], ["stage", "variant"])
    tex = aggregate_latex(agg, {"train": {"metric": "val/acc", "mode": "max"}}, caption="a_b & 50%")
    assert tex.count("{") == tex.count("}")
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert "base_line" not in tex and r"base\_line" in tex and r"a\_b \& 50\%" in tex
    iso = next(ln for ln in tex.splitlines() if ln.startswith("train & iso"))
    assert iso.count(r"\textbf{") == 2  # iso has the higher accuracy and the lower loss
    assert latex_escape("x_y^2~{}") == r"x\_y\textasciicircum{}2\textasciitilde{}\{\}"


def test_markdown_tables_have_consistent_columns():
    df = _trials()
    agg = seed_stats.aggregate(df, ["best.val/acc"], ["stage", "variant"])
    for text in (aggregate_markdown(agg), paired_markdown(seed_stats.paired(df, "base_line", ["best.val/acc"]))):
        rows = [ln for ln in text.splitlines() if ln.startswith("|")]
        assert len(rows) >= 3 and len({ln.count("|") for ln in rows}) == 1
        assert re.fullmatch(r"\|(---\|)+", rows[1])


def test_study_tables_use_the_declared_baseline():
    record = {
        "stage": "train",
        "select": {"metric": "val/acc", "mode": "max"},
        "compare": {"baseline": "base_line"},
        "trials": {},
    }
    for i, row in _trials().iterrows():
        record["trials"][f"t{i}"] = {
            "stage": "train",
            "trial_id": f"t{i}",
            "name": f"train/{row.variant}/s{row.seed}",
            "variant": row.variant,
            "seed": row.seed,
            "status": row.status,
            "best": row["best.val/acc"],
            "metrics": {"val/loss": row["final.val/loss"]},
        }
    t = study_tables.build({"train": record})
    assert set(t.aggregated["train"]["variant"]) == {"base_line", "iso"}
    assert t.paired["train"].iloc[0]["n"] == 3


def test_stage_without_successful_trials_has_no_aggregate():
    record = {
        "stage": "broken",
        "select": None,
        "trials": {
            "t": {
                "stage": "broken",
                "trial_id": "t",
                "name": "broken/base/s1",
                "variant": None,
                "seed": 1,
                "status": "error",
                "metrics": {},
                "error": "CUDA not available",
            }
        },
    }
    t = study_tables.build({"broken": record})
    assert "broken" not in t.aggregated and len(t.trials) == 1


def test_results_table_does_not_depend_on_the_order_trials_finished():
    from orchestrator.analysis import trials_table

    def trial(name, metrics):
        return {
            "stage": "s",
            "trial_id": name,
            "name": name,
            "variant": name,
            "seed": 0,
            "status": "done",
            "best": metrics["final/val_f1"],
            "metrics": metrics,
            "config": {"crf": "crf" in name},
        }

    plain = trial(
        "s/plain/s0",
        {"final/a": 1.0, "final/b": 2.0, "final/c": 3.0, "final/d": 4.0, "final/e": 5.0, "final/val_f1": 0.5},
    )
    crf = trial("s/crf/s0", {**plain["metrics"], "final/a_crf1": 0.1, "final/a_crf2": 0.2, "final/a_crf3": 0.3})
    tables = []
    for order in ([plain, crf], [crf, plain]):
        record = {"select": {"metric": "final/val_f1", "mode": "max"}, "trials": {t["name"]: t for t in order}}
        tables.append(trials_table.to_markdown(trials_table.build_table([record])))
    assert tables[0] == tables[1]
    header = tables[0].splitlines()[0]
    # the selection metric's final value is shown even when many other metrics sort before it
    assert "| best.final/val_f1 | final.final/val_f1 |" in header


# --- the unit of replication under fan-out, search, missing and duplicate seeds ------------

UP = "upstream.pre.top[2]"


def _random_study(rng: np.random.Generator) -> pd.DataFrame:
    """A fine-tuning stage's results as `trials_table.build_table` lays them out: a baseline without
    upstream, variants fanned out over 1-3 upstream trials, optional search samples (an lr value
    per trial, sometimes coinciding: duplicates of a seed), missing seeds, errored trials."""
    seeds = list(range(1, rng.integers(2, 6)))
    ups = [f"u{i}" for i in range(rng.integers(1, 4))]
    search = bool(rng.integers(0, 2))
    rows = []
    for variant in ("scratch", "pre_a", "pre_b"):
        for up in [None] if variant == "scratch" else ups:
            for seed in seeds:
                for _ in range(rng.integers(1, 3) if search else 1):
                    if rng.random() < 0.15:
                        continue  # a missing trial
                    lr = float(rng.choice([1e-3, 3e-4])) if search else None
                    row = {
                        "stage": "fine",
                        "variant": variant,
                        "seed": seed,
                        "status": "error" if rng.random() < 0.1 else "done",
                        "config.hidden_size": 8,
                        "config.lr": lr,
                        "config.encoder": None if up is None else f"/ck/{up}",
                        f"{UP}.checkpoint": None if up is None else f"/ck/{up}",
                        f"{UP}.trial": None if up is None else f"pre/{up}",
                        f"{UP}.trial_id": up,
                        "best.acc": rng.normal(0.7, 0.05) + 0.01 * seed,
                    }
                    rows.append(row)
    return pd.DataFrame(rows)


def _reference_groups(df: pd.DataFrame, keys: list[str]) -> dict[tuple, pd.Series]:
    """Per group (by `keys`), the per-seed mean of best.acc: the direct computation."""
    ok = df[df.status == "done"].copy()
    ok[keys] = ok[keys].astype(object).where(ok[keys].notna(), "")
    return {k if isinstance(k, tuple) else (k,): g.groupby("seed")["best.acc"].mean() for k, g in ok.groupby(keys)}


def _t(values: np.ndarray) -> tuple[float, float]:
    if len(values) < 2:
        return math.nan, math.nan
    return stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))


def test_aggregates_count_seeds_not_trials_against_a_direct_computation():
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(60):
        df = _random_study(rng)
        done = df[df.status == "done"]
        varies = [
            c for c in (f"{UP}.trial_id", "config.lr") if (done.groupby("variant")[c].nunique() > 1).any()
        ]  # within some variant
        for how, keys in (("separate", ["variant", *varies]), ("mean", ["variant"])):
            agg = seed_stats.aggregate(df, ["best.acc"], within_seed=how)
            shown = [k.replace(".trial_id", ".trial") for k in keys]
            expected = _reference_groups(df, keys)
            assert len(agg) == len(expected), (how, agg)
            for _, row in agg.iterrows():
                key = tuple(row[k] for k in shown)
                key = tuple(k.replace("pre/", "") if isinstance(k, str) else k for k in key)
                per_seed = expected[key]
                assert row["n"] == len(per_seed) == len(row["seeds"].split(","))
                assert row["best.acc:mean"] == pytest.approx(per_seed.mean())
                lo, hi = _t(per_seed.to_numpy())
                if math.isnan(lo):
                    assert math.isnan(row["best.acc:ci_low"])
                else:
                    assert (row["best.acc:ci_low"], row["best.acc:ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
                checked += 1
    assert checked > 100


def test_paired_deltas_pair_each_upstream_trial_with_the_baseline_seed_by_seed():
    rng = np.random.default_rng(11)
    for _ in range(60):
        df = _random_study(rng)
        if "scratch" not in set(df[df.status == "done"].variant):
            continue
        for how in ("separate", "mean"):
            pairs = seed_stats.paired(df, "scratch", ["best.acc"], within_seed=how)
            ok = df[df.status == "done"]
            base = ok[ok.variant == "scratch"].groupby("seed")["best.acc"].mean()
            if how == "separate" and ok["config.lr"].nunique() > 1:
                continue  # search samples: the baseline's own sampled lr must match (the next test)
            fans = (ok.groupby("variant")[f"{UP}.trial_id"].nunique() > 1).any()
            keys = ["variant", f"{UP}.trial_id"] if how == "separate" and fans else ["variant"]
            others = ok[ok.variant != "scratch"]
            expected = {k: g.groupby("seed")["best.acc"].mean() for k, g in others.groupby(keys)}
            assert len(pairs) == len(expected)
            for _, row in pairs.iterrows():
                key = (row["variant"], row[f"{UP}.trial"].replace("pre/", "")) if len(keys) == 2 else (row["variant"],)
                v = expected[key]
                common = sorted(set(v.index) & set(base.index))
                assert row["n"] == len(common)
                if not common:
                    assert "best.acc:delta" not in row or pd.isna(row["best.acc:delta"])
                    continue
                d = (v.loc[common] - base.loc[common]).to_numpy()
                assert row["best.acc:delta"] == pytest.approx(d.mean())
                lo, hi = _t(d)
                if not math.isnan(lo):
                    assert row["best.acc:delta_ci_low"] == pytest.approx(lo)
                    assert row["best.acc:delta_ci_high"] == pytest.approx(hi)
                if set(v.index) - set(base.index):
                    assert "unpaired (no baseline)" in row["note"]


def test_fan_out_duplicates_are_never_aligned_as_seeds():
    """The issue's case: fine-tuning over ${pre.top[2]} x 3 seeds. Pooling both upstream trials
    as if they were 6 replicates (or aligning duplicate seeds) makes the interval too narrow."""
    rows = []
    effect = {"u0": 0.25, "u1": -0.25}  # the two upstream encoders differ a lot
    for seed, noise in zip((1, 2, 3), (0.0, 0.02, -0.01)):
        rows.append({"stage": "fine", "variant": "scratch", "seed": seed, "status": "done", "best.acc": 0.7 + noise})
        for up, shift in effect.items():
            rows.append(
                {
                    "stage": "fine",
                    "variant": "pre",
                    "seed": seed,
                    "status": "done",
                    f"{UP}.trial_id": up,
                    f"{UP}.trial": f"pre/{up}",
                    f"{UP}.checkpoint": f"/ck/{up}",
                    "config.encoder": f"/ck/{up}",
                    "best.acc": 0.7 + shift + noise,
                }
            )
    df = pd.DataFrame(rows)
    agg = seed_stats.aggregate(df, ["best.acc"]).set_index("variant")
    assert agg.loc["pre", "n"].tolist() == [3, 3] and agg.loc["scratch", "n"] == 3
    assert "config.encoder" not in agg.columns and f"{UP}.trial" in agg.columns  # the name, not the path
    pooled = seed_stats.aggregate(df, ["best.acc"], within_seed="mean").set_index("variant")
    assert pooled.loc["pre", "n"] == 3 and "2 trials per seed averaged" in pooled.loc["pre", "note"]
    pairs = seed_stats.paired(df, "scratch", ["best.acc"]).set_index(f"{UP}.trial")
    assert pairs.loc["pre/u0", "best.acc:delta"] == pytest.approx(0.25)
    assert pairs.loc["pre/u1", "best.acc:delta"] == pytest.approx(-0.25)
    assert (pairs["n"] == 3).all()
    md = paired_markdown(seed_stats.paired(df, "scratch", ["best.acc"], within_seed="mean"))
    assert "| fine | pre | scratch | 3 |" in md and "2 trials per seed averaged" in md


def test_a_stage_compared_with_another_stage_is_paired_by_seed():
    """`compare: {stage: lstm}`: two architectures, each its own trainable, on the same seeds:
    Δ = this stage - that stage, seed by seed, on the metrics both report."""
    from scipy import stats as sstats

    from orchestrator.analysis import study_tables

    def record(stage, values, compare=None):
        return {
            "stage": stage,
            "select": {"metric": "val/mse", "mode": "min"},
            "compare": compare,
            "trials": {
                f"{stage}{seed}": {
                    "stage": stage,
                    "trial_id": f"{stage}{seed}",
                    "name": f"{stage}/base/s{seed}",
                    "variant": None,
                    "seed": seed,
                    "status": "done",
                    "best": value,
                    "config": {"width": 8 if stage == "lstm" else 32},
                    "metrics": {"val/mse": value},
                }
                for seed, value in values.items()
            },
        }

    lstm = record("lstm", {1: 0.30, 2: 0.50, 3: 0.40})
    patch = record("patch", {1: 0.28, 2: 0.45, 3: 0.41, 4: 0.2}, compare={"stage": "lstm"})
    for chosen in (None, "patch"):  # also when only the compared stage is shown (results --stage patch)
        row = study_tables.build({"lstm": lstm, "patch": patch}, stage=chosen).paired["patch"].iloc[0]
        deltas = [0.28 - 0.30, 0.45 - 0.50, 0.41 - 0.40]
        low, high = sstats.t.interval(0.95, 2, loc=sum(deltas) / 3, scale=sstats.sem(deltas))
        assert row["baseline"] == "lstm" and row["n"] == 3 and row["seeds"] == "1,2,3"
        assert row["best.val/mse:delta"] == pytest.approx(sum(deltas) / 3)
        assert row["best.val/mse:delta_ci_low"] == pytest.approx(low) and row[
            "best.val/mse:delta_ci_high"
        ] == pytest.approx(high)
        assert "unpaired (no baseline): seed(s) 4" in row["note"]
