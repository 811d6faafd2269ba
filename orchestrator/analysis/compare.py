"""`compare RUN_A RUN_B`: two studies' seed aggregates side by side, with B - A (unpaired: the
studies' seeds are different runs)."""

from __future__ import annotations

import pandas as pd

from orchestrator.analysis import study_tables
from orchestrator.analysis.rendering import cell, key_columns, metric_names
from orchestrator.errors import Problem, UserError
from orchestrator.storage.records import load_records, open_study


def compare_studies(run_a: str, run_b: str, metrics: list[str] | None) -> str:
    """Markdown: per (stage, variant, grid) group, A and B as mean ± CI, and B - A (unpaired)."""
    aggs = []
    for run in (run_a, run_b):
        t = study_tables.build(load_records(open_study(run)), metrics)
        aggs.append(pd.concat(t.aggregated.values(), ignore_index=True) if t.aggregated else pd.DataFrame())
    a, b = aggs
    if a.empty or b.empty:
        raise UserError(Problem(run_a if a.empty else run_b, "no aggregated results to compare"))
    keys = [c for c in key_columns(a) if c != "n" and c in b.columns]
    both = a.merge(b, on=keys, how="outer", suffixes=("@a", "@b"))
    shared = [m for m in metric_names(a) if m in metric_names(b)]
    if not shared:
        raise UserError(Problem(run_b, "the two studies share no metric columns"))
    head = keys + [f"{m} ({tag})" for m in shared for tag in ("A", "B", "B-A")]
    lines = [f"A = {run_a}", f"B = {run_b}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in both.iterrows():
        cells = [str(row[k]) for k in keys]
        for m in shared:
            ra = {k.replace("@a", ""): v for k, v in row.items() if k.endswith("@a")}
            rb = {k.replace("@b", ""): v for k, v in row.items() if k.endswith("@b")}
            da, db = ra.get(f"{m}:mean"), rb.get(f"{m}:mean")
            diff = "" if da is None or db is None or pd.isna(da) or pd.isna(db) else f"{db - da:+.4g}"
            cells += [cell(pd.Series(ra), m), cell(pd.Series(rb), m), diff]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
