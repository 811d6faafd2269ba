"""A raced stage's decisions as tables (`results`, `report`), and the rows that keep an
eliminated group's truncated values out of the seed aggregates while saying why it is missing."""

from __future__ import annotations

import pandas as pd

from orchestrator.analysis.trials_table import fmt
from orchestrator.planning.race_rule import saving_line, test_name

ELIMINATED = "eliminated by the race"  # how an eliminated group's aggregate row begins its note


def decisions(record: dict) -> pd.DataFrame:
    """One row per group compared at each decided rung: the group, the best group it was compared
    with, n paired seeds, the mean paired difference and its 95% t-interval, the one-sided p, the
    Holm threshold it met or missed, and whether it was eliminated."""
    rows = []
    for rung in (record.get("race") or {}).get("rungs", []):
        for c in rung["compared"]:
            rows.append(
                {
                    "stage": record["stage"],
                    "rung": rung["rung"],
                    "group": c.get("label") or c["group"],
                    "best": rung.get("best_label") or rung["best"],
                    "n": c["n"],
                    "delta": c["delta"],
                    "ci_low": c["ci_low"],
                    "ci_high": c["ci_high"],
                    "p": c["p"],
                    "threshold": c["level"],
                    "eliminated": c["eliminated"],
                }
            )
    return pd.DataFrame(rows)


def race_markdown(record: dict) -> str:
    """The decisions and what they saved, for the study's Markdown tables and report."""
    race = record.get("race") or {}
    settings = race.get("settings", {})
    metric = (record.get("select") or {}).get("metric", "")
    lines = [
        f"Race on {metric} ({(record.get('select') or {}).get('mode')}): rungs from epoch {settings.get('first')} "
        f"x {settings.get('factor')}, alpha {settings.get('alpha')} over all rungs, "
        f"{test_name(settings.get('test'))}, "
        f"at least {settings.get('min_seeds')} paired seeds. Δ = group - best, mean over paired seeds (95% CI).",
        "",
    ]
    table = decisions(record)
    if table.empty:
        lines.append("No rung was decided.")
    else:
        lines += ["| rung | group | best | n | Δ | 95% CI | p | threshold | eliminated |", "|---" * 9 + "|"]
        for _, r in table.iterrows():
            ci = f"{fmt(r['ci_low'])} to {fmt(r['ci_high'])}" if r["ci_low"] is not None else ""
            lines.append(
                f"| {r['rung']} | {r['group']} | {r['best']} | {r['n']} | {r['delta']:+.4g} | {ci} | {r['p']:.3g} "
                f"| {fmt(r['threshold'])} | {'yes' if r['eliminated'] else 'no'} |"
            )
    if race.get("saving"):
        lines += ["", "Saved: " + saving_line(race["saving"], race["saving"].get("usd")) + "."]
    return "\n".join(lines) + "\n"


def eliminated_rows(trials: pd.DataFrame) -> pd.DataFrame:
    """One aggregate row per eliminated group of a stage's trials: its seeds and trials and a
    note, no metric values (they stop early: averaging them beside full-length groups would
    compare different training lengths)."""
    if trials.empty or "race.group" not in trials.columns:
        return pd.DataFrame()
    gone = trials[(trials["status"] == "eliminated") & trials["race.group"].notna()]
    rows = []
    for _, group in gone.groupby("race.group", sort=True):
        first = group.iloc[0]
        ran = group[group["iterations"].fillna(0) > 0]
        seeds = sorted(set(ran["seed"].tolist()))
        row = {c: first[c] for c in group.columns if c in ("stage", "variant") or c.startswith("grid.")}
        row.update(
            n=len(seeds),
            seeds=",".join(map(str, seeds)),
            trials=len(group),
            note=(
                f"{ELIMINATED} at epoch {int(first['race.rung'])} (worse than {first['race.lost_to']}: "
                f"Δ={first['race.delta']:+.4g}, n={int(first['race.n'])}, p={first['race.p']:.3g}); "
                "its values stop early and are not aggregated"
            ),
        )
        rows.append(row)
    return pd.DataFrame(rows)


def paired_with_eliminated(pairs: pd.DataFrame, gone: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """The paired table with a row per eliminated group (no deltas: its values stop early), and,
    when the baseline itself was eliminated, that said in every row's note."""
    if gone.empty:
        return pairs
    lost = gone[gone["variant"] == baseline]
    if not lost.empty and not pairs.empty and "note" in pairs.columns:
        pairs = pairs.assign(note=f"the baseline {baseline!r} was " + lost.iloc[0]["note"])
    others = gone[gone["variant"] != baseline].assign(baseline=baseline, n=0)
    keys = [c for c in others.columns if c == "stage" or c == "variant" or c.startswith("grid.")]
    return pd.concat([pairs, others[[*keys, "baseline", "n", "note"]]], ignore_index=True)
