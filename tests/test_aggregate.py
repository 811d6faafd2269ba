"""Aggregates and paired deltas checked against independent scipy/pandas computations."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from orchestrator import aggregate, study_tables
from orchestrator.tables import aggregate_latex, aggregate_markdown, latex_escape, paired_markdown


def _trials() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for variant, shift in (("base_line", 0.0), ("iso", 0.05)):
        for seed in (1, 2, 3):
            rows.append({"stage": "train", "variant": variant, "seed": seed, "status": "done",
                         "best.val/acc": 0.7 + shift + 0.01 * seed + rng.normal(0, 0.01),
                         "final.val/loss": 0.5 - shift + rng.normal(0, 0.02)})
    rows.append({"stage": "train", "variant": "iso", "seed": 4, "status": "error",
                 "best.val/acc": 0.0, "final.val/loss": 9.0})
    return pd.DataFrame(rows)


def test_mean_std_ci_equal_scipy():
    df = _trials()
    agg = aggregate.aggregate(df, ["best.val/acc", "final.val/loss"], ["stage", "variant"]).set_index("variant")
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
    pairs = aggregate.paired(df, "base_line", ["best.val/acc"], ["stage", "variant"])
    row = pairs.iloc[0]
    assert row["variant"] == "iso" and row["n"] == 2 and row["seeds"] == "1,2"
    a = df[(df.variant == "iso") & df.seed.isin([1, 2])].sort_values("seed")["best.val/acc"].to_numpy()
    b = df[(df.variant == "base_line") & df.seed.isin([1, 2])].sort_values("seed")["best.val/acc"].to_numpy()
    d = a - b
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert row["best.val/acc:delta"] == pytest.approx(d.mean())
    assert row["best.val/acc:delta_ci_low"] == pytest.approx(lo) and row["best.val/acc:delta_ci_high"] == pytest.approx(hi)


def test_single_seed_has_no_interval_and_unknown_columns_are_errors():
    df = _trials()[lambda d: d.seed == 1]
    agg = aggregate.aggregate(df, ["best.val/acc"], ["stage", "variant"])
    assert agg["n"].tolist() == [1, 1] and agg["best.val/acc:ci_low"].isna().all()
    from orchestrator.errors import UserError

    with pytest.raises(UserError, match="unknown column"):
        aggregate.aggregate(df, ["best.nope"], ["stage", "variant"])
    with pytest.raises(UserError, match="no successful trials of variant 'zzz'"):
        aggregate.paired(df, "zzz", ["best.val/acc"])


def test_latex_is_balanced_escaped_and_bolds_the_best():
    agg = aggregate.aggregate(_trials(), ["best.val/acc", "final.val/loss"], ["stage", "variant"])
    tex = aggregate_latex(agg, {"train": {"metric": "val/acc", "mode": "max"}}, caption="a_b & 50%")
    assert tex.count("{") == tex.count("}")
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert "base_line" not in tex and r"base\_line" in tex and r"a\_b \& 50\%" in tex
    iso = next(ln for ln in tex.splitlines() if ln.startswith("train & iso"))
    assert iso.count(r"\textbf{") == 2  # iso has the higher accuracy and the lower loss
    assert latex_escape("x_y^2~{}") == r"x\_y\textasciicircum{}2\textasciitilde{}\{\}"


def test_markdown_tables_have_consistent_columns():
    df = _trials()
    agg = aggregate.aggregate(df, ["best.val/acc"], ["stage", "variant"])
    for text in (aggregate_markdown(agg), paired_markdown(aggregate.paired(df, "base_line", ["best.val/acc"]))):
        rows = [ln for ln in text.splitlines() if ln.startswith("|")]
        assert len(rows) >= 3 and len({ln.count("|") for ln in rows}) == 1
        assert re.fullmatch(r"\|(---\|)+", rows[1])


def test_study_tables_use_the_declared_baseline():
    record = {"stage": "train", "select": {"metric": "val/acc", "mode": "max"}, "compare": {"baseline": "base_line"},
              "trials": {}}
    for i, row in _trials().iterrows():
        record["trials"][f"t{i}"] = {"stage": "train", "trial_id": f"t{i}", "name": f"train/{row.variant}/s{row.seed}",
                                     "variant": row.variant, "seed": row.seed, "status": row.status,
                                     "best": row["best.val/acc"], "metrics": {"val/loss": row["final.val/loss"]}}
    t = study_tables.build({"train": record})
    assert set(t.aggregated["train"]["variant"]) == {"base_line", "iso"}
    assert t.paired["train"].iloc[0]["n"] == 3


def test_stage_without_successful_trials_has_no_aggregate():
    record = {"stage": "broken", "select": None, "trials": {"t": {
        "stage": "broken", "trial_id": "t", "name": "broken/base/s1", "variant": None, "seed": 1,
        "status": "error", "metrics": {}, "error": "CUDA not available"}}}
    t = study_tables.build({"broken": record})
    assert "broken" not in t.aggregated and len(t.trials) == 1


def test_results_table_does_not_depend_on_the_order_trials_finished():
    from orchestrator import results

    def trial(name, metrics):
        return {"stage": "s", "trial_id": name, "name": name, "variant": name, "seed": 0, "status": "done",
                "best": metrics["final/val_f1"], "metrics": metrics, "config": {"crf": "crf" in name}}

    plain = trial("s/plain/s0", {"final/a": 1.0, "final/b": 2.0, "final/c": 3.0, "final/d": 4.0,
                                 "final/e": 5.0, "final/val_f1": 0.5})
    crf = trial("s/crf/s0", {**plain["metrics"], "final/a_crf1": 0.1, "final/a_crf2": 0.2, "final/a_crf3": 0.3})
    tables = []
    for order in ([plain, crf], [crf, plain]):
        record = {"select": {"metric": "final/val_f1", "mode": "max"}, "trials": {t["name"]: t for t in order}}
        tables.append(results.to_markdown(results.build_table([record])))
    assert tables[0] == tables[1]
    header = tables[0].splitlines()[0]
    # the selection metric's final value is shown even when many other metrics sort before it
    assert "| best.final/val_f1 | final.final/val_f1 |" in header
