"""All tables of a study from its stored records: trials, seed aggregates, paired comparisons."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from orchestrator.analysis import race_tables, seed_stats, trials_table


@dataclass
class StudyTables:
    trials: pd.DataFrame
    records: dict[str, dict]
    aggregated: dict[str, pd.DataFrame] = field(default_factory=dict)
    paired: dict[str, pd.DataFrame] = field(default_factory=dict)
    budget: str | None = None  # spent against the study's cap (planning.budget.budget_text)

    @property
    def selects(self) -> dict[str, dict]:
        return {name: r.get("select") for name, r in self.records.items() if r.get("select")}


def build(
    records: dict[str, dict],
    metrics: list[str] | None = None,
    group_by: list[str] | None = None,
    baseline: str | None = None,
    stage: str | None = None,
    within_seed: str | None = None,
) -> StudyTables:
    """Every table of the chosen stages; `within_seed` overrides each stage's own setting."""
    chosen = {n: r for n, r in records.items() if r and (stage is None or n == stage)}
    trials = trials_table.build_table(list(chosen.values()))
    out = StudyTables(trials, chosen)
    for name, record in chosen.items():
        rows = trials[trials["stage"] == name] if not trials.empty else trials
        if rows.empty:
            continue
        keep = {"stage", "variant", "seed", "status"}  # keys stay even when empty (no variants)
        rows = rows[[c for c in rows.columns if c in keep or rows[c].notna().any()]]
        stage_metrics = [m for m in (metrics or seed_stats.default_metrics(rows)) if m in rows.columns]
        if metrics and not stage_metrics:
            continue
        how = within_seed or record.get("within_seed") or "separate"
        agg = seed_stats.aggregate(rows, stage_metrics, group_by, how)
        gone = race_tables.eliminated_rows(rows)
        if not gone.empty:  # said, not averaged: an eliminated group's values stop early
            agg = pd.concat([agg, gone], ignore_index=True)
        if agg.empty:  # no successful trial in this stage: nothing to aggregate or compare
            continue
        out.aggregated[name] = agg
        compare = record.get("compare") or {}
        if compare.get("stage") and not baseline:
            other = records.get(compare["stage"])  # the other stage, also when only this one is shown
            both = trials if compare["stage"] in chosen else trials_table.build_table([record, other] if other else [])
            against = _against_stage(both, name, compare, stage_metrics) if other else None
            if against is not None:
                out.paired[name] = seed_stats.paired(against[0], against[1], against[2], group_by, how)
            continue
        base = baseline or compare.get("baseline")
        if base and base in set(rows["variant"].dropna()):
            pairs = seed_stats.paired(rows, base, stage_metrics, group_by, how)
            out.paired[name] = race_tables.paired_with_eliminated(pairs, gone, base)
    return out


def _against_stage(trials: pd.DataFrame, name: str, compare: dict, metrics: list[str]):
    """(rows, baseline label, metrics) pairing stage `name` with `compare["stage"]` by seed: the
    other stage's trials (its variant `compare["baseline"]`, if given) become the baseline group
    labelled by that stage's name, in the same stage cell; the metrics both stages have. None when
    the other stage has no trials."""
    other = compare["stage"]
    mine, theirs = trials[trials["stage"] == name].copy(), trials[trials["stage"] == other].copy()
    if compare.get("baseline"):
        theirs = theirs[theirs["variant"] == compare["baseline"]]
    if theirs.empty:
        return None
    mine["variant"] = mine["variant"].fillna(name).replace("", name)
    theirs["variant"], theirs["stage"] = other, name
    both = pd.concat([mine, theirs], ignore_index=True)
    shared = [m for m in metrics if m in theirs.columns and theirs[m].notna().any()]
    keep = [c for c in both.columns if not c.startswith("config.") or both[c].nunique(dropna=False) <= 1]
    return both[keep], other, shared
