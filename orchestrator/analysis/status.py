"""Reading a study back from storage: `status` and `results` (no Ray needed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from orchestrator.analysis import trials_table as results
from orchestrator.errors import Problem, UserError
from orchestrator.execution.study_runner import STUDY_META
from orchestrator.storage.store import Store


def open_study(run_dir: str) -> Store:
    try:
        store = Store(run_dir)
        found = store.exists(STUDY_META)
    except OSError as exc:
        raise UserError(Problem(run_dir, f"cannot read storage: {' '.join(str(exc).split())[:200]}")) from None
    if not found:
        raise UserError(Problem(run_dir, f"no study here (expected {STUDY_META}); give the study's folder, "
                                "e.g. runs/<study name> or s3://bucket/prefix/<study name>"))
    return store


def status_view(store: Store, meta: dict):
    """(renderable, ended): trials by state per stage, running trials, and whether every stage ended."""
    from rich.console import Group
    from rich.text import Text

    status = json.loads(store.read_text(results.STATE_DIR, "status.json")) \
        if store.exists(results.STATE_DIR, "status.json") else {"stages": {}}
    table = Table(header_style="bold")
    for col in ("stage", "state", "trials", "done", "running", "pending", "error", "diverged"):
        table.add_column(col)
    ended, running = True, []
    for stage in meta.get("stages", {}):
        entry = status["stages"].get(stage)
        record = results.load_stage_record(store, stage)
        if record:  # the saved record is final for its stage; status.json may be newer while running
            counts, state = results.status_counts(record["trials"]), record["state"]
        elif entry:
            counts, state = entry["counts"], entry["state"]
        else:
            counts, state = {}, "not started"
        if entry and entry["state"] == "running":
            counts, state = entry["counts"], "running"
            running += [(stage, t) for t in entry.get("trials", {}).values() if t.get("status") == "running"]
        ended &= record is not None and state != "running"
        total = entry["total"] if entry and entry.get("total") else len(meta["stages"][stage])
        table.add_row(stage, state, str(total), *[str(counts.get(k, 0)) for k in
                                                  ("done", "running", "pending", "error", "diverged")])
    parts = [Text.from_markup(f"[bold]study {meta['name']}[/] ({store.uri}), created {meta.get('created_at')}"),
             table]
    for stage, t in running:
        best = f"  best {t['best']:.4g}" if isinstance(t.get("best"), (int, float)) else ""
        parts.append(Text(f"  running {t.get('name')}: {t.get('iterations') or 0} reports{best}"))
    if status.get("updated_at"):
        parts.append(Text.from_markup(f"[dim]last update {status['updated_at']}[/]"))
    return Group(*parts), ended


def show_status(run_dir: str, console: Console, watch: bool = False, interval_s: float = 2.0) -> None:
    """Print the study's status; with `watch`, refresh it until every stage has ended (or Ctrl-C)."""
    store = open_study(run_dir)
    meta = json.loads(store.read_text(STUDY_META))
    view, ended = status_view(store, meta)
    if not watch:
        console.print(view)
        return
    import time

    from rich.live import Live

    with Live(view, console=console, refresh_per_second=4, transient=False) as live:
        while not ended:
            time.sleep(interval_s)
            meta = json.loads(store.read_text(STUDY_META))  # a resumed run may add stages' records
            view, ended = status_view(store, meta)
            live.update(view)
    console.print("[green]every stage has ended[/]")


def render_markdown(t) -> str:
    """Per stage: the trial table, the seed aggregate and the paired comparison (if any)."""
    from orchestrator.analysis.rendering import aggregate_markdown, paired_markdown

    parts = []
    for name, record in t.records.items():
        parts.append(f"## {name}\n")
        if record.get("state") in ("skipped", "failed", "gated"):
            parts.append(f"**{record['state']}**: {record.get('reason', '')}\n")
            continue
        for g in record.get("gates", []):
            parts.append(f"- gate {'✅' if g['passed'] else '❌'} {g['text']}")
        if record.get("gates"):
            parts.append("")
        rows = t.trials[t.trials["stage"] == name].dropna(axis=1, how="all") if not t.trials.empty else t.trials
        parts.append(results.to_markdown(rows, [c for c in results.summary_columns(rows) if c != "stage"]))
        agg = t.aggregated.get(name)
        if agg is not None and not agg.empty and (agg["n"] > 1).any():
            parts.append(f"\n### {name}: over seeds\n\n" + aggregate_markdown(agg.drop(columns=["stage"])))
        pairs = t.paired.get(name)
        if pairs is not None:
            parts.append(f"\n### {name}: against the baseline\n\n" + paired_markdown(pairs.drop(columns=["stage"])))
        parts.append("")
    return "\n".join(parts)


def export_results(run_dir: str, fmt: str, output: Path | None, console: Console, view: str | None = None,
                   metrics: list[str] | None = None, group_by: list[str] | None = None,
                   baseline: str | None = None, stage: str | None = None, within_seed: str | None = None) -> None:
    import pandas as pd

    from orchestrator.analysis import study_tables
    from orchestrator.analysis.rendering import aggregate_latex

    store = open_study(run_dir)
    records = study_tables.load_records(store)
    if not records:
        raise UserError(Problem(run_dir, "no results yet (no stage of this study has ended)"))
    if stage and stage not in records:
        raise UserError(Problem("--stage", f"no results for stage {stage!r}; stages with results: {', '.join(records)}"))
    t = study_tables.build(records, metrics, group_by, baseline, stage, within_seed)
    views = {"trials": t.trials,
             "aggregate": pd.concat(t.aggregated.values(), ignore_index=True) if t.aggregated else pd.DataFrame(),
             "paired": pd.concat(t.paired.values(), ignore_index=True) if t.paired else pd.DataFrame()}
    if view not in (None, "all", *views):
        raise UserError(Problem("--view", f"unknown view {view!r}; expected all, trials, aggregate or paired"))
    if view == "paired" and not t.paired:
        raise UserError(Problem("--baseline", "no paired comparison: give --baseline VARIANT (or compare: in the study)"))
    if fmt == "md":
        text = render_markdown(t) if view in (None, "all") else results.to_markdown(views[view], list(views[view].columns))
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
            results._for_parquet(df).to_parquet(output, index=False)
            console.print(f"wrote {len(df)} rows to {output}")
            return
        else:
            raise UserError(Problem("--format", f"unknown format {fmt!r}; expected md, csv, parquet, json or latex"))
    if output is not None:
        output.write_text(text)
        console.print(f"wrote {output}")
    else:
        sys.stdout.write(text)


def compare_studies(run_a: str, run_b: str, metrics: list[str] | None) -> str:
    """Markdown: per (stage, variant, grid) group, A and B as mean ± CI, and B - A (unpaired)."""
    import pandas as pd

    from orchestrator.analysis import study_tables
    from orchestrator.analysis.rendering import _cell, key_columns, metric_names

    aggs = []
    for run in (run_a, run_b):
        t = study_tables.build(study_tables.load_records(open_study(run)), metrics)
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
            cells += [_cell(pd.Series(ra), m), _cell(pd.Series(rb), m), diff]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
