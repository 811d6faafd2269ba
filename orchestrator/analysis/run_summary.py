"""The end of `run` and `resume`: every table of the study written to its storage (results,
aggregates, paired deltas; per stage in `tables/`), and one table per stage printed."""

from __future__ import annotations

import pandas as pd
from rich.console import Console
from rich.table import Table

from orchestrator.analysis import study_tables, trials_table
from orchestrator.analysis.rendering import aggregate_markdown, paired_markdown, render_markdown
from orchestrator.planning.budget import budget_text, read_budget
from orchestrator.storage.store import Store


def write_all(store: Store, records: list[dict]) -> tuple[study_tables.StudyTables, dict]:
    """Write every table of the study to storage: (the tables, each stage's trial table)."""
    tables = study_tables.build({r["stage"]: r for r in records})
    tables.budget = budget_text(read_budget(store), records)
    trials_table.write_tables(store, tables.trials, markdown=False)  # results.md: every table, below
    write_summary_tables(store, tables)
    per_stage = {}
    for record in records:  # one table per stage: their columns differ
        if record.get("trials"):
            per_stage[record["stage"]] = trials_table.build_table([record])
            trials_table.write_tables(store, per_stage[record["stage"]], f"tables/{record['stage']}")
    return tables, per_stage


def write_and_show(store: Store, records: list[dict], console: Console) -> None:
    """Write every table of the study to storage and print one per stage."""
    tables, per_stage = write_all(store, records)
    for record in records:
        if record["stage"] not in per_stage:
            continue
        stage_table = per_stage[record["stage"]]
        console.print(f"\n[bold]{record['stage']}[/]")
        print_table(stage_table, console)
        agg = tables.aggregated.get(record["stage"])
        if agg is not None and (agg["n"] > 1).any():
            console.print(f"[bold]{record['stage']}: over seeds[/] (mean ± 95% CI)")
            console.print(
                aggregate_markdown(agg.drop(columns=["stage"])), markup=False, highlight=False, soft_wrap=True
            )
        if record["stage"] in tables.paired:
            console.print(
                paired_markdown(tables.paired[record["stage"]].drop(columns=["stage"])),
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    if tables.budget:
        console.print(tables.budget, markup=False, highlight=False)
    console.print(
        f"\nresults: {store.child_uri(trials_table.TABLE + '.parquet')} (also .csv, .md; per stage in tables/)"
    )


def write_summary_tables(store: Store, tables: study_tables.StudyTables) -> None:
    """aggregate.* and paired.* next to results.*, and results.md with every table."""
    if tables.aggregated:
        trials_table.write_tables(store, pd.concat(tables.aggregated.values(), ignore_index=True), "aggregate")
    if tables.paired:
        trials_table.write_tables(store, pd.concat(tables.paired.values(), ignore_index=True), "paired")
    store.write_text(render_markdown(tables), "results.md")


def print_table(df: pd.DataFrame, console: Console) -> None:
    """A compact table on a terminal; Markdown when the output is a pipe or a log."""
    if df.empty:
        console.print("no trials")
        return
    cols = [c for c in trials_table.summary_columns(df) if c not in ("stage", "trial_id")]
    if not console.is_terminal:
        console.print(trials_table.to_markdown(df, cols), markup=False, highlight=False, soft_wrap=True)
        return
    table = Table(header_style="bold")
    for c in cols:
        table.add_column(c.removeprefix("config.").removeprefix("final."), overflow="fold")
    for _, row in df[cols].iterrows():
        table.add_row(*[trials_table.fmt(v) for v in row.tolist()])
    console.print(table)
