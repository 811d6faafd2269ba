"""Seed-aggregated tables and paired comparisons against a baseline; the seed is the unit of
replication.

**Groups.** Trials are replicates of each other when they differ in nothing but the seed. By
default a group is the stage, the variant, the grid values *and everything else that tells its
trials apart*: the upstream trial of a fan-out reference (`${pre.top[2]}`, `${pre.all}`), the
sampled values of a search, any other config value that differs. With `within_seed="mean"` the
groups are only stage, variant and grid values, and within a group the trials that share a seed
(its fan-out or search members) are averaged first. An explicit `group_by` sets the groups;
trials of a group that share a seed are averaged too. In every case `n` is the number of
distinct seeds behind the numbers, mean, sample std (ddof=1) and the 95% t-interval (mean ±
t(0.975, n-1) · std / √n; none for n = 1) are over the n per-seed values, and `note` says when
a seed had several trials. Example: fine-tuning that fans out over `${pretrain.top[2]}` with 3
seeds has 6 trials per variant; by default that is two rows (one per upstream trial) of n = 3,
with `within_seed="mean"` one row of n = 3 whose per-seed values are means over 2 trials; never
one row of n = 6, which would count an upstream trial as an independent replicate.

**Pairs.** For every variant group and the baseline variant in the same stage and grid cell
(and, where the baseline has them too, the same distinguishing values, e.g. the same upstream
trial), Δ_s = value(variant, s) - value(baseline, s) per seed s that both have; mean Δ, its
95% t-interval and n = the number of paired seeds. Seeds that only one side has, and sides
with several trials per seed (averaged), are named in `note`: a pairing is never made silently.
Pairing by seed removes the seed-to-seed variance both share.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from orchestrator.errors import Problem, UserError

OK = ("done",)
WITHIN_SEED = ("separate", "mean")


def default_metrics(df: pd.DataFrame) -> list[str]:
    """The select metric (best.*) and the main final metrics of the table."""
    best = [c for c in df.columns if c.startswith("best.")]
    # A trainable's own end-of-training evaluation (metrics named final/...) is what the study
    # compares; its per-epoch val/* metrics are then the training record, not the result.
    evaluated = sorted(
        (c for c in df.columns if c.startswith("final.final/") and df[c].dtype.kind in "fi"), key=lambda c: c.count("/")
    )
    if evaluated:
        return best + evaluated
    finals = [
        c
        for c in df.columns
        if c.startswith("final.")
        and df[c].dtype.kind in "fi"
        and any(k in c for k in ("val/", "oof/", "train/loss", "test/", "eval/"))
        and not c.startswith(("final.best/", "final.oof/acc/", "final.oof_so_far/"))
        and not c.endswith("/windows")
    ]
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
        raise UserError(
            Problem(f"--{what}", f"unknown column(s) {', '.join(missing)}; columns are: {', '.join(df.columns)}")
        )


def _keyed(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`df` with `columns` made groupable: missing values become "" (pandas drops NaN keys)."""
    return df.assign(**{c: df[c].astype(object).where(df[c].notna(), "") for c in columns})


def distinguishing_columns(df: pd.DataFrame, base: list[str]) -> list[str]:
    """Columns other than the seed that tell apart trials of one `base` cell (stage, variant,
    grid values): upstream trials of fan-out references and config values (search samples,
    values resolved from a fan-out), those that differ within some cell."""
    candidates = [
        c
        for c in df.columns
        if (c.startswith("config.") and c != "config.seed") or (c.startswith("upstream.") and c.endswith(".trial_id"))
    ]
    if df.empty or not candidates:
        return []
    keyed = _keyed(df, base + candidates)
    counts = keyed.groupby(base, sort=False)[candidates].nunique() if base else keyed[candidates].nunique().to_frame().T
    return [c for c in candidates if (counts[c] > 1).any()]


def _shown(df: pd.DataFrame, extras: list[str]) -> list[str]:
    """What a table shows of the distinguishing columns: an upstream trial by its name, and
    every config value except a checkpoint path that is the upstream trial's own (the
    `upstream.*.checkpoint` of the same row: the name says it already)."""
    shown = []
    lineage = [c for c in df.columns if c.startswith("upstream.") and c.endswith(".checkpoint")]
    for c in extras:
        if c.startswith("upstream."):
            name = c[: -len("_id")]
            shown.append(name if name in df.columns else c)
            continue
        present = df[c].notna()
        is_lineage = present.any() and any(df.loc[present, c].eq(df.loc[present, up]).all() for up in lineage)
        if not is_lineage:
            shown.append(c)
    return shown


def _per_seed(group: pd.DataFrame, metric: str) -> pd.Series:
    """The metric per seed (the mean over a seed's trials), seeds without a value left out."""
    return pd.to_numeric(group[metric], errors="coerce").groupby(group["seed"]).mean().dropna()


def _per_seed_note(group: pd.DataFrame, side: str = "") -> str:
    counts = group.groupby("seed").size()
    if counts.empty or counts.max() <= 1:
        return ""
    many = counts[counts > 1]
    what = f"{int(many.min())}" if many.min() == many.max() else f"{int(many.min())}-{int(many.max())}"
    seeds = "every seed" if len(many) == len(counts) else "seed(s) " + ",".join(map(str, sorted(many.index)))
    return f"{side}{what} trials per seed averaged ({seeds})"


def _groups(ok: pd.DataFrame, group_by: list[str] | None, within_seed: str) -> tuple[list[str], list[str]]:
    """(columns that define the groups, columns the table shows)."""
    if within_seed not in WITHIN_SEED:
        raise UserError(Problem("--within-seed", f"expected one of {', '.join(WITHIN_SEED)}, got {within_seed!r}"))
    if group_by:
        return list(group_by), list(group_by)
    base = default_group_by(ok)
    extras = distinguishing_columns(ok, base) if within_seed == "separate" else []
    return base + extras, base + _shown(ok, extras)


def aggregate(
    df: pd.DataFrame, metrics: list[str] | None = None, group_by: list[str] | None = None, within_seed: str = "separate"
) -> pd.DataFrame:
    """One row per group: n (distinct seeds), seeds, trials, note and, per metric, mean / std /
    ci_low / ci_high over the per-seed values (and `:n`, seeds with a value of that metric)."""
    ok = df[df["status"].isin(OK)] if "status" in df.columns else df
    metrics = metrics or default_metrics(ok)
    _check_columns(df, metrics, "metric")
    _check_columns(df, group_by or [], "group-by")
    keys, shown = _groups(ok, group_by, within_seed)
    rows = []
    keyed = _keyed(ok, sorted(set(keys) | set(shown)))
    for _, group in keyed.groupby(keys, sort=True, dropna=False) if keys else [((), keyed)]:
        row = {c: group[c].iloc[0] for c in shown}
        seeds = sorted(set(group["seed"].tolist()))
        row.update(n=len(seeds), seeds=",".join(map(str, seeds)), trials=len(group), note=_per_seed_note(group))
        for m in metrics:
            values = _per_seed(group, m).to_numpy(dtype=float)
            if len(values) == 0:
                continue
            mean, std, lo, hi = _ci(values)
            row.update(
                {f"{m}:mean": mean, f"{m}:std": std, f"{m}:ci_low": lo, f"{m}:ci_high": hi, f"{m}:n": len(values)}
            )
        rows.append(row)
    return pd.DataFrame(rows)


def paired(
    df: pd.DataFrame,
    baseline: str,
    metrics: list[str] | None = None,
    group_by: list[str] | None = None,
    within_seed: str = "separate",
) -> pd.DataFrame:
    """Δ of every variant group against `baseline`, paired by seed (see the module doc). A
    baseline whose every trial failed pairs with nothing: one row per other variant says so (the
    other tables are still written); a baseline that is no variant at all is an error."""
    ok = df[df["status"].isin(OK)] if "status" in df.columns else df
    if baseline not in set(df["variant"].dropna()):
        raise UserError(
            Problem(
                "--baseline",
                f"no trials of variant {baseline!r}; variants are: {', '.join(sorted(set(df['variant'].dropna())))}",
            )
        )
    if baseline not in set(ok["variant"].dropna()):
        note = f"no successful trial of the baseline {baseline!r}: nothing to pair with"
        others = sorted(set(ok["variant"].dropna()) - {baseline})
        return pd.DataFrame([{"variant": v, "baseline": baseline, "n": 0, "seeds": "", "note": note} for v in others])
    metrics = metrics or default_metrics(ok)
    keys, shown = _groups(ok, group_by, within_seed)
    cell = [c for c in keys if c != "variant" and not (c.startswith("config.") or c.startswith("upstream."))]
    extras = [c for c in keys if c not in cell and c != "variant"]
    shown_cell = [c for c in shown if c in cell]
    shown_extra = [c for c in shown if c not in cell and c != "variant"]
    keyed = _keyed(ok, sorted(set(keys) | set(shown)))
    rows = []
    for _, group in keyed.groupby(cell, sort=True) if cell else [((), keyed)]:
        base_rows = group[group["variant"] == baseline]
        if base_rows.empty:
            continue
        others = group[group["variant"] != baseline]
        for _, vrows in others.groupby(["variant", *extras], sort=True):
            match = base_rows
            for c in extras:  # the baseline's own distinguishing values must agree, where it has them
                if (base_rows[c] != "").any():
                    match = match[match[c] == vrows[c].iloc[0]]
            row = {
                **{c: vrows[c].iloc[0] for c in shown_cell},
                "variant": vrows["variant"].iloc[0],
                **{c: vrows[c].iloc[0] for c in shown_extra},
                "baseline": baseline,
            }
            seeds = sorted(set(vrows["seed"]) & set(match["seed"]))
            notes = _pairing_notes(vrows, match, [c for c in extras if (base_rows[c] != "").any()])
            row.update(n=len(seeds), seeds=",".join(map(str, seeds)), note="; ".join(notes))
            for m in metrics:
                row.update(_deltas(vrows, match, m))
            rows.append(row)
    return pd.DataFrame(rows)


def _pairing_notes(vrows: pd.DataFrame, match: pd.DataFrame, matched_on: list[str]) -> list[str]:
    """What a pairing could not do: several trials of a seed averaged, no matching baseline,
    seeds that only one side has."""
    v_seeds, b_seeds = set(vrows["seed"]), set(match["seed"])
    notes = [n for n in (_per_seed_note(vrows), _per_seed_note(match, "baseline: ")) if n]
    if match.empty:
        notes.append("no baseline trials with the same " + ", ".join(matched_on))
    if v_seeds - b_seeds:
        notes.append("unpaired (no baseline): seed(s) " + ",".join(map(str, sorted(v_seeds - b_seeds))))
    if b_seeds - v_seeds and not match.empty:
        notes.append("unpaired (baseline only): seed(s) " + ",".join(map(str, sorted(b_seeds - v_seeds))))
    return notes


def _deltas(variant: pd.DataFrame, baseline: pd.DataFrame, m: str) -> dict:
    """Mean and 95% t-interval of the per-seed differences of metric `m` over the seeds both sides
    have (none when they share no seed)."""
    v, b = _per_seed(variant, m), _per_seed(baseline, m)
    common = sorted(set(v.index) & set(b.index))
    if not common:
        return {}
    d = (v.loc[common] - b.loc[common]).to_numpy(dtype=float)
    mean, _, lo, hi = _ci(d)
    return {
        f"{m}:delta": mean,
        f"{m}:delta_ci_low": lo,
        f"{m}:delta_ci_high": hi,
        f"{m}:baseline_mean": float(b.loc[common].mean()),
        f"{m}:n": len(common),
    }
