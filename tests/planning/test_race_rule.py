"""The race's decision rule (`planning.race_rule`): its tests against scipy, Holm's step-down, the
levels over rungs, and a fast version of `bench/race_simulation.py` (the guarantee and the saving)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from orchestrator.planning import race_rule

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import race_simulation  # noqa: E402


def test_rungs_grow_by_the_factor_and_are_whole_distinct_iterations():
    assert race_rule.rungs(10, 2, 100) == [10, 20, 40, 80]
    assert race_rule.rungs(1, 1.5, 10) == [1, 2, 3, 4, 6, 8]  # 1, 1.5, 2.25, 3.4, 5.1, 7.6 rounded up
    assert race_rule.rungs(5, 2, 4) == []


def test_the_levels_of_every_rung_add_up_to_alpha():
    levels = [race_rule.rung_level(0.05, k) for k in range(1, 200_000)]
    assert math.isclose(sum(levels), 0.05, rel_tol=1e-6)
    assert levels[0] == pytest.approx(0.05 / race_rule.ZETA3)


def _values(rows: dict[str, list[float]]) -> dict[str, dict]:
    return {g: dict(enumerate(v, start=1)) for g, v in rows.items()}


def test_a_group_worse_on_every_seed_is_eliminated_with_scipys_paired_t_p_value():
    best = [1.0, 1.2, 0.9, 1.1, 1.05]
    worse = [1.3, 1.45, 1.2, 1.5, 1.3]
    chosen, rows = race_rule.decide(_values({"a": best, "b": worse}), "min", 0.04, min_seeds=3)
    assert chosen == "a"
    (row,) = rows
    expected = stats.ttest_rel(worse, best, alternative="greater").pvalue
    assert row.p == pytest.approx(expected)
    assert row.eliminated and row.level == pytest.approx(0.04)
    d = np.subtract(worse, best)
    half = stats.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    assert (row.delta, row.ci_low, row.ci_high) == pytest.approx((d.mean(), d.mean() - half, d.mean() + half))


def test_max_mode_counts_lower_values_as_worse_and_wilcoxon_uses_scipys_exact_p():
    best = [0.80, 0.82, 0.79, 0.85, 0.81, 0.83]
    worse = [0.70, 0.75, 0.72, 0.74, 0.73, 0.71]
    chosen, (row,) = race_rule.decide(_values({"a": best, "b": worse}), "max", 0.05, min_seeds=3, test="wilcoxon")
    assert chosen == "a"
    assert row.p == pytest.approx(stats.wilcoxon(np.subtract(best, worse), alternative="greater").pvalue)
    assert row.p == pytest.approx(0.5**6) and row.eliminated
    assert row.delta < 0  # value(group) - value(best), in the metric's own units


def test_holm_steps_down_and_stops_at_the_first_p_that_is_too_large():
    out = race_rule.holm([0.01, 0.04, 0.02], 0.05)
    assert out == [(True, 0.05 / 3), (True, 0.05), (True, 0.05 / 2)]
    out = race_rule.holm([0.01, 0.04, 0.03], 0.05)  # 0.03 > 0.05/2: 0.04 is never reached
    assert out[0] == (True, 0.05 / 3) and out[2] == (False, 0.05 / 2) and math.isnan(out[1][1])
    out = race_rule.holm([0.02, 0.001, 0.9], 0.05)
    assert out == [(True, 0.05 / 2), (True, 0.05 / 3), (False, 0.05)]


def test_the_best_group_is_never_tested_and_too_few_paired_seeds_are_never_tested():
    vals = _values({"a": [1.0, 1.0, 1.0], "b": [2.0, 2.1, 2.2], "c": [5.0, 5.0]})
    chosen, rows = race_rule.decide(vals, "min", 0.05, min_seeds=3)
    assert chosen == "a" and [r.group for r in rows] == ["b"]
    # groups that share too few seeds are not compared, whatever their values
    vals = {"a": {1: 1.0, 2: 1.0, 3: 1.0}, "b": {3: 9.0, 4: 9.0, 5: 9.0}}
    assert race_rule.decide(vals, "min", 0.05, min_seeds=3)[1] == []


def test_differences_without_variation_count_as_the_sign_test_does():
    vals = _values({"a": [1.0, 2.0, 3.0], "b": [1.5, 2.5, 3.5]})
    _, (row,) = race_rule.decide(vals, "min", 0.2, min_seeds=3)
    assert row.p == 0.125 and row.eliminated  # three of three seeds worse: 0.5^3


def test_identical_groups_are_not_eliminated():
    vals = _values({"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0]})
    _, (row,) = race_rule.decide(vals, "min", 0.05, min_seeds=3)
    assert row.p == 1.0 and not row.eliminated


def _args(plain: bool = False) -> argparse.Namespace:
    return argparse.Namespace(epochs=100, first=10, factor=2.0, alpha=0.05, test="t", plain=plain)


def _not_above(rate: float, studies: int, alpha: float) -> bool:
    """The observed rate is consistent with at most alpha: its one-sided 99% lower bound is not above it."""
    lost = round(rate * studies)
    return lost == 0 or stats.beta.ppf(0.01, lost, studies - lost + 1) <= alpha


def test_simulation_the_truly_best_group_is_rarely_eliminated_and_equal_groups_mostly_survive():
    equal = race_simulation.simulate(1000, (4, 5, 0.85), 0.0, _args(), seed=11)
    assert _not_above(equal["best_eliminated"], 1000, 0.05), equal
    assert equal["eliminated"] < 0.3, equal  # of 3 groups that are no worse
    small = race_simulation.simulate(1000, (4, 5, 0.85), 0.25, _args(), seed=12)
    assert _not_above(small["best_eliminated"], 1000, 0.05), small


def test_simulation_gaps_of_one_seed_sd_save_at_least_40_percent_of_trial_epochs():
    one = race_simulation.simulate(1000, (4, 5, 0.85), 1.0, _args(), seed=13)
    assert one["saved"] >= 0.40 and one["best_eliminated"] <= 0.01, one


def test_simulation_testing_every_rung_at_alpha_would_break_the_guarantee():
    """What the spending over rungs is for: the same check fails on the rule without it."""
    plain = race_simulation.simulate(1000, (4, 5, 0.85), 0.0, _args(plain=True), seed=11)
    assert not _not_above(plain["best_eliminated"], 1000, 0.05), plain


def test_plan_and_validate_show_the_race(tmp_path, write_study, cli):
    from tests.conftest import TINY_STAGE

    path = write_study(
        "name: raced\nstorage: ./runs\ndefaults: {seeds: [1, 2, 3]}\nstages:\n  pre:\n"
        + TINY_STAGE
        + "    variants: {a: {lr: 0.01}, b: {lr: 0.001}}\n"
        + "    select: {metric: val/loss, mode: min}\n    race: {first: 4}\n"
    )
    code, out, err = cli("plan", path)
    assert code == 0, err
    assert "race: groups of seeds compared from epoch 4 (x2 per rung), paired t-test, alpha 0.05" in out
    code, out, err = cli("validate", path)
    assert code == 0 and "6 trials" in out, err
