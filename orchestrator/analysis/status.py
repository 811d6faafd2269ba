"""`status RUN_DIR [--watch]`: trials by state per stage and the running trials, for a running or
finished study, from its storage alone (no Ray needed)."""

from __future__ import annotations

import json
import time

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator.planning.budget import read_budget
from orchestrator.storage.records import STATE_DIR, load_stage_record, open_study, read_meta, status_counts
from orchestrator.storage.store import Store

STATUS_COLUMNS = ("done", "running", "pending", "error", "diverged", "eliminated")


def status_view(store: Store, meta: dict):
    """(renderable, ended): trials by state per stage, running trials, and whether every stage ended."""
    status = (
        json.loads(store.read_text(STATE_DIR, "status.json"))
        if store.exists(STATE_DIR, "status.json")
        else {"stages": {}}
    )
    table = Table(header_style="bold")
    for col in ("stage", "state", "trials", *STATUS_COLUMNS):
        table.add_column(col)
    ended, running = True, []
    for stage in meta.get("stages", {}):
        entry = status["stages"].get(stage)
        record = load_stage_record(store, stage)
        if record:  # the saved record is final for its stage; status.json may be newer while running
            counts, state = status_counts(record["trials"]), record["state"]
            state += f" ({record['stopped_by']})" if record.get("stopped_by") else ""
        elif entry:
            counts, state = entry["counts"], entry["state"]
        else:
            counts, state = {}, "not started"
        if entry and entry["state"] == "running":
            counts, state = entry["counts"], "running"
            running += [t for t in entry.get("trials", {}).values() if t.get("status") == "running"]
        ended &= record is not None and state != "running"
        total = entry["total"] if entry and entry.get("total") else len(meta["stages"][stage])
        table.add_row(
            stage,
            state,
            str(total),
            *[str(counts.get(k, 0)) for k in STATUS_COLUMNS],
        )
    parts = [Text.from_markup(f"[bold]study {meta['name']}[/] ({store.uri}), created {meta.get('created_at')}"), table]
    for t in running:
        best = f"  best {t['best']:.4g}" if isinstance(t.get("best"), (int, float)) else ""
        parts.append(Text(f"  running {t.get('name')}: {t.get('iterations') or 0} reports{best}"))
    spent = read_budget(store)
    if spent:
        stopped = f"; [yellow]stopped[/]: {spent['stopped']}" if spent.get("stopped") else ""
        parts.append(Text.from_markup(f"budget: spent {spent['text']}{stopped}"))
    if status.get("updated_at"):
        parts.append(Text.from_markup(f"[dim]last update {status['updated_at']}[/]"))
    return Group(*parts), ended


def show_status(run_dir: str, console: Console, watch: bool = False, interval_s: float = 2.0) -> None:
    """Print the study's status; with `watch`, refresh it until every stage has ended (or Ctrl-C)."""
    store = open_study(run_dir)
    meta = read_meta(store)
    view, ended = status_view(store, meta)
    if not watch:
        console.print(view)
        return
    with Live(view, console=console, refresh_per_second=4, transient=False) as live:
        while not ended:
            time.sleep(interval_s)
            meta = read_meta(store)  # a resumed run may add stages' records
            view, ended = status_view(store, meta)
            live.update(view)
    console.print("[green]every stage has ended[/]")
