"""The race's decision rule, without Ray: at a rung, which groups of seeds of a stage are
significantly worse than the best group (`StageRace` in `orchestrator.execution.race` applies it
while the stage runs; `bench/race_simulation.py` measures it on synthetic learning curves).

- **Group**: the trials of a stage that differ only in the seed (variant, grid values, search
  sample and upstream trial the same), the unit `results --view aggregate` uses.
- **Rungs**: the epochs `first`, `first x factor`, `first x factor^2`, ... (each rounded up,
  strictly increasing), in the trainable's own unit (`progress`: its reported epoch, else Tune's
  report count; a raced stage reports every epoch). A trial's value at a rung is its best value of the select
  metric up to that iteration (what `best` reads); a trial that ended normally before a rung
  has its final best there.
- **At a rung** the best group is the surviving group with the best mean among those with at
  least `min_seeds` values. Every other surviving group with at least `min_seeds` seeds paired
  with it is tested, one-sided, on its per-seed differences from the best group (`t`:
  `scipy.stats.ttest_1samp(..., alternative="greater")`; `wilcoxon`: `scipy.stats.wilcoxon`,
  exact for small n), and Holm's step-down over those tests at the rung's level eliminates the
  significantly worse ones. The best group is never tested, hence never eliminated.
- **Levels**: rung k (k = 1, 2, ...) tests at alpha_k = alpha / (zeta(3) k^3). The alpha_k sum to
  alpha over every rung a stage can have (however long it runs): by the union bound, a group
  that is not worse than the one it is compared with is eliminated at some rung with probability
  at most alpha. Most of alpha goes to the first rungs (0.83 alpha, 0.10 alpha, 0.03 alpha, ...),
  where stopping saves the most. Testing every rung at alpha instead would look K times: in the
  simulation the truly best group was then eliminated in about twice alpha of the studies.

Why written here: no library races groups of seeds. Ray Tune's schedulers judge single trials and
its `Repeater` refuses early stopping; Optuna's `WilcoxonPruner` races one trial's instances run
one after another; irace's F-race runs outside any cluster scheduler. scipy provides the tests.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from trainables.runtime import selection

ZETA3 = 1.2020569031595942  # sum of 1/k^3: the levels alpha/(zeta(3) k^3) add up to alpha


def rungs(first: int, factor: float, up_to: float) -> list[int]:
    """The rungs (reported iterations) up to and including `up_to`."""
    out, r = [], float(first)
    while math.ceil(r) <= up_to:
        rung = math.ceil(r)
        if not out or rung > out[-1]:
            out.append(rung)
        r *= factor
    return out


def test_name(test: str) -> str:
    """How tables and the terminal name a race's test (`race.test`)."""
    return "paired t-test" if test == "t" else "signed-rank test"


def rung_level(alpha: float, k: int) -> float:
    """The one-sided level of the k-th rung (k = 1 for the first)."""
    return alpha / (ZETA3 * k**3)


def smallest_p(test: str, n: int) -> float:
    """The smallest p-value the test can give on n paired seeds (the exact signed-rank test
    cannot go below 2^-n; the t-test can go to 0)."""
    return 0.5**n if test == "wilcoxon" else 0.0


def group_key(variant, grid: dict, config: dict, upstream: dict, sampled: dict | None) -> str:
    """A group's identity: everything that tells its trials apart but the seed."""
    lineage = {label: (u or {}).get("trial_id") for label, u in (upstream or {}).items()}
    payload = {"variant": variant, "grid": grid, "config": config, "upstream": lineage, "sampled": sampled or {}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class Comparison:
    """One group against the rung's best group, over the seeds both have at the rung."""

    group: str
    against: str
    n: int
    seeds: list
    delta: float  # mean of value(group) - value(best), in the metric's own units
    ci_low: float  # 95% t-interval of that mean
    ci_high: float
    p: float  # one-sided: the group is worse than the best
    level: float  # what Holm compared p with (nan: not reached: an earlier p was not small enough)
    eliminated: bool

    def to_dict(self) -> dict:
        """As a record keeps it: a number that is not finite (a threshold never reached) is None."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def _p_value(worse: np.ndarray, test: str) -> float:
    """One-sided p-value of 'the mean of `worse` is above 0' (worse: per-seed differences signed
    so that positive means worse). Differences without any variation leave the t-test undefined:
    they count as the exact sign test does (0.5^n if all are positive, else 1)."""
    if np.ptp(worse) == 0:
        return 0.5 ** len(worse) if worse[0] > 0 else 1.0
    if test == "wilcoxon":
        p = stats.wilcoxon(worse, alternative="greater").pvalue
    else:
        p = stats.ttest_1samp(worse, 0.0, alternative="greater").pvalue
    return float(p) if math.isfinite(p) else 1.0


def _interval(d: np.ndarray) -> tuple[float, float, float]:
    mean = float(d.mean())
    if len(d) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(d) - 1)) * float(d.std(ddof=1)) / math.sqrt(len(d))
    return mean, mean - half, mean + half


def holm(p_values: list[float], level: float) -> list[tuple[bool, float]]:
    """Holm's step-down at family level `level`: (rejected, the threshold its p met or missed;
    nan where the procedure stopped before it) per p-value, in the given order."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    out: list[tuple[bool, float]] = [(False, math.nan)] * len(p_values)
    m = len(p_values)
    for rank, i in enumerate(order):
        threshold = level / (m - rank)
        rejected = p_values[i] <= threshold
        out[i] = (rejected, threshold)
        if not rejected:
            break
    return out


def decide(
    values: dict[str, dict], mode: str, level: float, min_seeds: int, test: str = "t", testable: set | None = None
) -> tuple[str | None, list[Comparison]]:
    """(the best group, its comparisons) at one rung. `values`: surviving group -> {seed: value};
    `testable`: the groups that may be tested (default: all); any may be the best."""
    sign = 1.0 if mode == "min" else -1.0  # positive differences mean worse
    eligible = {g: v for g, v in values.items() if len(v) >= min_seeds}
    if len(eligible) < 2:
        return None, []
    means = {g: float(np.mean(list(v.values()))) for g, v in eligible.items()}
    best = (min if mode == "min" else max)(sorted(means), key=lambda g: means[g])
    rows = []
    for g in sorted(values):
        if g == best or (testable is not None and g not in testable):
            continue
        seeds = sorted(set(values[g]) & set(values[best]), key=str)
        if len(seeds) < min_seeds:
            continue
        d = np.array([values[g][s] - values[best][s] for s in seeds], dtype=float)
        mean, lo, hi = _interval(d)
        rows.append(Comparison(g, best, len(seeds), seeds, mean, lo, hi, _p_value(sign * d, test), math.nan, False))
    for row, (rejected, threshold) in zip(rows, holm([r.p for r in rows], level)):
        row.eliminated, row.level = rejected, threshold
    return best, rows


def progress(result: dict) -> int | None:
    """How far a trial is, in the trainable's own unit (its reported `epoch`, `step` or `fold`),
    else Tune's `training_iteration`: Tune counts a restored trial's reports from 0 again, so
    after a driver kill only the trainable's own count still says which epoch a value is from."""
    for unit in selection.UNITS:
        value = result.get(unit)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == int(value):
            return int(value)
    value = result.get("training_iteration")
    return int(value) if isinstance(value, int) else None


def _ran(trial: dict) -> int:
    """The epochs a recorded trial ran (its last progress; 0 if it never started)."""
    return progress(trial.get("metrics") or {}) or int(trial.get("iterations") or 0)


def saving(record: dict) -> dict | None:
    """What a raced stage did not spend, against running every trial to the end: trial-epochs
    (epochs, in the trainable's unit), and GPU- and CPU-hours at the pace of its trials that ran to the end
    (the median wall time per iteration, times what each eliminated trial was charged per hour).
    The full length is the longest trial that ran to the end. None before any trial did."""
    trials = list(record.get("trials", {}).values())
    full = [t for t in trials if t.get("status") == "done" and _ran(t)]
    if not record.get("race") or not full:
        return None
    length = max(_ran(t) for t in full)
    paces = sorted(t["wall_s"] / _ran(t) for t in full if t.get("wall_s"))
    pace = paces[len(paces) // 2] if paces else 0.0
    eliminated = [t for t in trials if t.get("status") == "eliminated"]
    epochs = gpu_s = cpu_s = 0.0
    for t in eliminated:
        left = max(length - _ran(t), 0)
        charge = t.get("charged") or {"gpu": 0.0, "cpu": 0.0}
        epochs += left
        gpu_s, cpu_s = gpu_s + left * pace * charge["gpu"], cpu_s + left * pace * charge["cpu"]
    planned = length * len(trials)
    return {
        "trial_epochs_saved": int(epochs),
        "trial_epochs_planned": planned,
        "fraction": epochs / planned if planned else 0.0,
        "gpu_hours": gpu_s / 3600,
        "cpu_hours": cpu_s / 3600,
        "eliminated_trials": len(eliminated),
        "never_started": sum(t.get("started") is False for t in eliminated),
        "groups_eliminated": len(record["race"].get("eliminated", {})),
        "groups": len(record["race"].get("groups", {})),
        "length": length,
    }


def saving_line(saved: dict, usd: float | None = None) -> str:
    """`1 of 3 groups eliminated (4 trials, 2 never started); 70 of 150 trial-epochs not run
    (47%), 0 GPU-hours, 0.012 CPU-hours`"""
    text = (
        f"{saved['groups_eliminated']} of {saved['groups']} groups eliminated ({saved['eliminated_trials']} "
        f"trials, {saved['never_started']} never started); {saved['trial_epochs_saved']} of "
        f"{saved['trial_epochs_planned']} trial-epochs not run ({saved['fraction']:.0%}), "
        f"{saved['gpu_hours']:.3g} GPU-hours, {saved['cpu_hours']:.3g} CPU-hours"
    )
    return text + (f", ${usd:.2f}" if usd is not None else "")
