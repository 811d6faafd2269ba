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
    store = open_study(run_dir)
    records = load_records(store)
    if not records:
        raise UserError(Problem(run_dir, "no results yet (no stage of this study has ended)"))
    if stage and stage not in records:
        raise UserError(
            Problem("--stage", f"no results for stage {stage!r}; stages with results: {', '.join(records)}")
        )
    t = study_tables.build(records, metrics, group_by, baseline, stage, within_seed)
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
    if fmt == "md":
        text = (
            render_markdown(t)
            if view in (None, "all")
            else trials_table.to_markdown(views[view], list(views[view].columns))
        )
    elif fmt == "latex":
        if view not in (None, "aggregate", "all"):
            raise UserError(Problem("--format", "latex renders the aggregate view"))
        text = aggregate_latex(views["aggregate"], t.selects, caption=f"{run_dir}: mean ± 95% CI over seeds")
    else:
        df = views["trials" if view in (None, "all") else view]
        if fmt == "csv":
            text = df.to_csv(index=False)
        elif fmt == "json":
            text = df.to_json(orient="records", indent=1)
        elif fmt == "parquet":
            if output is None:
                raise UserError(Problem("--format", "parquet needs --output FILE"))
            trials_table.for_parquet(df).to_parquet(output, index=False)
            console.print(f"wrote {len(df)} rows to {output}")
            return
        else:
            raise UserError(Problem("--format", f"unknown format {fmt!r}; expected md, csv, parquet, json or latex"))
    if output is not None:
        output.write_text(text)
        console.print(f"wrote {output}")
    else:
        sys.stdout.write(text)
