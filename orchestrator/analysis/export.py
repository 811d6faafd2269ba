"""`results RUN_DIR`: a study's tables (trials, seed aggregates, paired deltas) in Markdown, CSV,
Parquet, JSON or LaTeX, from its storage alone."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from rich.console import Console

from orchestrator.analysis import study_tables, trials_table
from orchestrator.analysis.rendering import aggregate_latex, render_markdown
from orchestrator.errors import Problem, UserError
from orchestrator.planning.budget import budget_text, read_budget
from orchestrator.storage.records import load_records, open_study


def export_results(
    run_dir: str,
    fmt: str,
    output: Path | None,
    console: Console,
    *,
    view: str | None = None,
    metrics: list[str] | None = None,
    group_by: list[str] | None = None,
    baseline: str | None = None,
    stage: str | None = None,
    within_seed: str | None = None,
) -> None:
    """Write a view of the study's tables (all, trials, aggregate, paired) in `fmt` to `output`,
    or to stdout."""
    store = open_study(run_dir)
    records = load_records(store)
    if not records:
        raise UserError(Problem(run_dir, "no results yet (no stage of this study has ended)"))
    if stage and stage not in records:
        raise UserError(
            Problem("--stage", f"no results for stage {stage!r}; stages with results: {', '.join(records)}")
        )
    t = study_tables.build(records, metrics, group_by, baseline, stage, within_seed)
    t.budget = budget_text(read_budget(store), records.values())
    views = {
        "trials": t.trials,
        "aggregate": pd.concat(t.aggregated.values(), ignore_index=True) if t.aggregated else pd.DataFrame(),
        "paired": pd.concat(t.paired.values(), ignore_index=True) if t.paired else pd.DataFrame(),
    }
    if view not in (None, "all", *views):
        raise UserError(Problem("--view", f"unknown view {view!r}; expected all, trials, aggregate or paired"))
    if view == "paired" and not t.paired:
        raise UserError(
            Problem("--baseline", "no paired comparison: give --baseline VARIANT (or compare: in the study)")
        )
    if fmt == "parquet":
        if output is None:
            raise UserError(Problem("--format", "parquet needs --output FILE"))
        df = views["trials" if view in (None, "all") else view]
        trials_table.for_parquet(df).to_parquet(output, index=False)
        console.print(f"wrote {len(df)} rows to {output}")
        return
    text = _as_text(fmt, view, t, views, run_dir)
    if output is not None:
        output.write_text(text)
        console.print(f"wrote {output}")
    else:
        sys.stdout.write(text)


def _as_text(fmt: str, view: str | None, t: study_tables.StudyTables, views: dict, run_dir: str) -> str:
    if fmt == "md":
        if view in (None, "all"):
            return render_markdown(t)
        return trials_table.to_markdown(views[view], list(views[view].columns))
    if fmt == "latex":
        if view not in (None, "aggregate", "all"):
            raise UserError(Problem("--format", "latex renders the aggregate view"))
        return aggregate_latex(views["aggregate"], t.selects, caption=f"{run_dir}: mean ± 95% CI over seeds")
    df = views["trials" if view in (None, "all") else view]
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "json":
        return df.to_json(orient="records", indent=1)
    raise UserError(Problem("--format", f"unknown format {fmt!r}; expected md, csv, parquet, json or latex"))
