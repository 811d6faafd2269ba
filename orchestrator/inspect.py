"""Reading a study back from storage: `status` and `results` (no Ray needed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from orchestrator import results
from orchestrator.errors import Problem, UserError
from orchestrator.runner import STUDY_META, print_table
from orchestrator.storage import Store


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


def show_status(run_dir: str, console: Console) -> None:
    store = open_study(run_dir)
    meta = json.loads(store.read_text(STUDY_META))
    console.print(f"[bold]study {meta['name']}[/] ({store.uri}), created {meta.get('created_at')}")
    status = json.loads(store.read_text(results.STATE_DIR, "status.json")) \
        if store.exists(results.STATE_DIR, "status.json") else {"stages": {}}
    table = Table(header_style="bold")
    for col in ("stage", "state", "trials", "done", "running", "pending", "error", "diverged"):
        table.add_column(col)
    for stage in meta.get("stages", {}):
        entry = status["stages"].get(stage)
        record = results.load_stage_record(store, stage)
        if record:  # the saved record is final for its stage; status.json may be newer while running
            counts: dict[str, int] = {}
            for t in record["trials"].values():
                counts[t["status"]] = counts.get(t["status"], 0) + 1
            state = record["state"]
        elif entry:
            counts, state = entry["counts"], entry["state"]
        else:
            counts, state = {}, "not started"
        if entry and entry["state"] == "running":
            counts, state = entry["counts"], "running"
        total = entry["total"] if entry and entry.get("total") else len(meta["stages"][stage])
        table.add_row(stage, state, str(total), *[str(counts.get(k, 0)) for k in
                                                  ("done", "running", "pending", "error", "diverged")])
    console.print(table)
    if status.get("updated_at"):
        console.print(f"[dim]last update {status['updated_at']}[/]")


def export_results(run_dir: str, fmt: str, output: Path | None, console: Console) -> None:
    store = open_study(run_dir)
    if not store.exists(f"{results.TABLE}.parquet"):
        raise UserError(Problem(run_dir, "no results table yet (the study has not finished a stage)"))
    df = results.read_table(store)
    if fmt == "md":
        text = results.to_markdown(df)
    elif fmt == "csv":
        text = df.to_csv(index=False)
    elif fmt == "json":
        text = df.to_json(orient="records", indent=1)
    elif fmt == "parquet":
        if output is None:
            raise UserError(Problem("--format", "parquet needs --output FILE"))
        df.to_parquet(output, index=False)
        console.print(f"wrote {len(df)} rows to {output}")
        return
    else:
        raise UserError(Problem("--format", f"unknown format {fmt!r}; expected md, csv, parquet or json"))
    if output is not None:
        output.write_text(text)
        console.print(f"wrote {len(df)} rows to {output}")
    elif fmt == "md" and sys.stdout.isatty():
        print_table(df, console)
    else:
        sys.stdout.write(text)
