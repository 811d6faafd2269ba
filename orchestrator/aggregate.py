"""Seed-aggregated tables and paired comparisons against a baseline.

Rows of the results table (one per trial) are grouped by what was varied on purpose (stage,
variant, grid values; or `--group-by`), and every metric is summarised over the seeds of a
group: n, mean, sample std (ddof=1) and a 95% confidence interval of the mean with the
t-distribution (mean ± t(0.975, n-1) · std / √n; no interval for n = 1).

A paired comparison takes a baseline variant and, for every other variant of the same stage
and grid values, the per-seed differences Δ_s = metric(variant, s) - metric(baseline, s) over
the seeds both have; it reports mean Δ, its 95% t-interval, and n. Pairing by seed removes the
seed-to-seed variance that both variants share.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from orchestrator.errors import Problem, UserError

OK = ("done",)


def default_metrics(df: pd.DataFrame) -> list[str]:
    """The select metric (best.*) and the main final metrics of the table."""
    best = [c for c in df.columns if c.startswith("best.")]
    # A trainable's own end-of-training evaluation (metrics named final/...) is what the study
    # compares; its per-epoch val/* metrics are then the training record, not the result.
    evaluated = sorted((c for c in df.columns if c.startswith("final.final/") and df[c].dtype.kind in "fi"),
                       key=lambda c: c.count("/"))
    if evaluated:
        return best + evaluated
    finals = [c for c in df.columns if c.startswith("final.") and df[c].dtype.kind in "fi"
              and any(k in c for k in ("val/", "oof/", "train/loss", "test/", "eval/"))
              and not c.startswith(("final.best/", "final.oof/acc/", "final.oof_so_far/"))
              and not c.endswith("/windows")]
    return best + finals


def default_group_by(df: pd.DataFrame) -> list[str]:
    keys = [c for c in ("stage", "variant") if c in df.columns]
    return keys + sorted(c for c in df.columns if c.startswith("grid."))


def _ci(values: np.ndarray) -> tuple[float, float, float, float]:
    """(mean, std, ci_low, ci_high) of a sample; std and CI are NaN when n < 2."""
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    std = float(values.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def _check_columns(df: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UserError(Problem(f"--{what}", f"unknown column(s) {', '.join(missing)}; columns are: "
                                f"{', '.join(df.columns)}"))


def aggregate(df: pd.DataFrame, metrics: list[str] | None = None, group_by: list[str] | None = None) -> pd.DataFrame:
    """One row per group: n and, per metric, mean / std / ci_low / ci_high over seeds."""
    ok = df[df["status"].isin(OK)] if "status" in df.columns else df
    metrics = metrics or default_metrics(ok)
    group_by = group_by or default_group_by(ok)
    _check_columns(df, metrics, "metric")
    _check_columns(df, group_by, "group-by")
    rows = []
    keyed = ok.assign(**{c: ok[c].astype(object).where(ok[c].notna(), "") for c in group_by})
    for key, group in keyed.groupby(group_by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(group_by, key))
        row["n"] = len(group)
        row["seeds"] = ",".join(str(s) for s in sorted(group["seed"].tolist())) if "seed" in group else ""
        for m in metrics:
            values = pd.to_numeric(group[m], errors="coerce").dropna().to_numpy(dtype=float)
            if len(values) == 0:
                continue
            mean, std, lo, hi = _ci(values)
            row.update({f"{m}:mean": mean, f"{m}:std": std, f"{m}:ci_low": lo, f"{m}:ci_high": hi})
        rows.append(row)
    return pd.DataFrame(rows)


def paired(df: pd.DataFrame, baseline: str, metrics: list[str] | None = None,
           group_by: list[str] | None = None) -> pd.DataFrame:
    """Δ of every variant against `baseline`, paired by seed within each stage and grid cell."""
    ok = df[df["status"].isin(OK)] if "status" in df.columns else df
    if baseline not in set(ok["variant"].dropna()):
        raise UserError(Problem("--baseline", f"no successful trials of variant {baseline!r}; variants are: "
                                f"{', '.join(sorted(set(ok['variant'].dropna())))}"))
    metrics = metrics or default_metrics(ok)
    cell = [c for c in (group_by or default_group_by(ok)) if c != "variant"]
    rows = []
    keyed = ok.assign(**{c: ok[c].astype(object).where(ok[c].notna(), "") for c in cell})
    for key, group in keyed.groupby(cell, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        base = group[group["variant"] == baseline].set_index("seed")
        if base.empty:
            continue
        for variant, other in group[group["variant"] != baseline].groupby("variant", sort=True):
            other = other.set_index("seed")
            seeds = sorted(set(base.index) & set(other.index))
            row = dict(zip(cell, key), variant=variant, baseline=baseline, n=len(seeds),
                       seeds=",".join(map(str, seeds)))
            for m in metrics:
                d = (pd.to_numeric(other.loc[seeds, m], errors="coerce")
                     - pd.to_numeric(base.loc[seeds, m], errors="coerce")).dropna().to_numpy(dtype=float)
                if len(d) == 0:
                    continue
                mean, std, lo, hi = _ci(d)
                row.update({f"{m}:delta": mean, f"{m}:delta_ci_low": lo, f"{m}:delta_ci_high": hi,
                            f"{m}:baseline_mean": float(pd.to_numeric(base.loc[seeds, m]).mean())})
            rows.append(row)
    return pd.DataFrame(rows)
