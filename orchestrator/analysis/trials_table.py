"""The trial table: one row per trial (config, status, best and final metrics, lineage, paths),
written as Parquet + CSV + Markdown, atomically.

Rows come from the driver's record of every trial (`orchestrator.execution.recorder`), saved
per stage in the study's storage (`orchestrator.storage.records`); the tables are rebuilt from
those, so `results RUN` works from any machine that can read the storage, without Ray.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import pandas as pd

from orchestrator.storage.store import Store

TABLE = "results"


def flatten(prefix: str, value: Any, out: dict) -> dict:
    """Nested dicts as dotted columns (`config.optimizer.lr`); other non-scalars as JSON text."""
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value if isinstance(value, (int, float, str, bool)) or value is None else json.dumps(value)
    return out


def rows_of(record: dict) -> list[dict]:
    rows = []
    for t in record["trials"].values():
        row = {
            "stage": t["stage"],
            "trial_id": t["trial_id"],
            "trial": t["name"],
            "variant": t["variant"],
            "seed": t["seed"],
            "status": t["status"] + (" (budget)" if t.get("stopped_by") == "budget" else ""),
            "iterations": t.get("iterations"),
            "duration_s": t.get("duration_s"),
            "gpu_hours": (t.get("gpu_s") or 0.0) / 3600,
            "cpu_hours": (t.get("cpu_s") or 0.0) / 3600,
            "checkpoint": t.get("checkpoint"),
            # the epoch (fold, step) whose state the checkpoint holds: the best epoch's, unless
            # it was not kept (`checkpoint.keep_best: false` rotated it out)
            "checkpoint_epoch": t.get("checkpoint_epoch"),
            "path": t.get("path"),
            "code": t.get("code"),  # the hash of the trainable's code the trial ran (study.json: code)
            "error": t.get("error"),
        }
        flatten("grid", t.get("grid") or {}, row)
        flatten("config", t.get("config", {}), row)
        for label, up in sorted((t.get("upstream") or {}).items()):  # lineage of referenced stages
            row[f"upstream.{label}.trial"] = up.get("trial")
            row[f"upstream.{label}.trial_id"] = up.get("trial_id")
            row[f"upstream.{label}.checkpoint"] = up.get("checkpoint")
        race = t.get("race")
        if race:  # eliminated by its stage's race: where, against whom, how sure
            row["race.rung"], row["race.group"], row["race.lost_to"] = race["rung"], race["label"], race["lost_to"]
            row["race.n"], row["race.delta"], row["race.p"] = race["n"], race["delta"], race["p"]
            row["race.ci_low"], row["race.ci_high"] = race.get("ci_low"), race.get("ci_high")
        select = record.get("select")
        if select and t.get("best") is not None:
            row[f"best.{select['metric']}"] = t["best"]
        for k, v in sorted(t.get("metrics", {}).items()):
            row[f"final.{k}"] = v
        rows.append(row)
    return rows


def build_table(records: list[dict]) -> pd.DataFrame:
    rows = [row for rec in records for row in rows_of(rec)]
    df = pd.DataFrame(rows)
    if not df.empty:
        # metric columns in name order, not in the order trials happened to finish (which
        # decided which metrics the summary showed)
        final = sorted(c for c in df.columns if c.startswith("final."))
        df = df[[c for c in df.columns if not c.startswith("final.")] + final]
        df = df.sort_values(["stage", "trial"], kind="stable").reset_index(drop=True)
    return df


def write_tables(store: Store, df: pd.DataFrame, name: str = TABLE, markdown: bool = True) -> None:
    """Parquet, CSV and (unless the caller writes its own) Markdown, each written atomically."""
    buf = io.BytesIO()
    for_parquet(df).to_parquet(buf, index=False)
    store.write_bytes(buf.getvalue(), f"{name}.parquet")
    store.write_text(df.to_csv(index=False), f"{name}.csv")
    if markdown:
        store.write_text(to_markdown(df), f"{name}.md")


def for_parquet(df: pd.DataFrame) -> pd.DataFrame:
    # Columns mixing types (a config key that is a number in one stage, a string in another)
    # are stored as strings rather than failing the write.
    out = df.copy()
    for col in out.columns:
        kinds = {type(v) for v in out[col].dropna()}
        if len(kinds - {int, float}) > 0 and len(kinds) > 1:
            out[col] = out[col].map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    return out


def read_table(store: Store, name: str = TABLE) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(store.read_bytes(f"{name}.parquet")))


def summary_columns(df: pd.DataFrame) -> list[str]:
    """The columns worth reading in a terminal / Markdown: ids, varied config, main metrics."""
    # progress in the trainable's own unit (epochs, folds), not Tune's report count
    cols = [c for c in ("stage", "trial", "status", "final.step", "final.epoch", "final.fold") if c in df.columns]

    def varies(col: str) -> bool:  # within a stage: columns of other stages are not "varied"
        values = df[col].astype(object).fillna("<unset>").astype(str)
        groups = values.groupby(df["stage"]) if "stage" in df.columns else [(None, values)]
        return any(g.nunique() > 1 for _, g in groups)

    varied = [c for c in df.columns if c.startswith("config.") and c != "config.seed" and varies(c)]
    lineage = [c for c in df.columns if c.startswith("upstream.") and c.endswith(".trial")]
    best = [c for c in df.columns if c.startswith("best.")]
    # a trainable's own end-of-training evaluation (metrics named final/...) first
    # the final value of each stage's selection metric first, then the trainable's own
    # end-of-training evaluation (metrics named final/...)
    selected = [f"final.{c[len('best.') :]}" for c in best if f"final.{c[len('best.') :]}" in df.columns]
    evaluated = sorted(
        (c for c in df.columns if c.startswith("final.final/") and c not in selected), key=lambda c: c.count("/")
    )
    evaluated = selected + evaluated
    finals = evaluated + [
        c
        for c in df.columns
        if c.startswith("final.")
        and not c.startswith("final.best/")
        and c not in evaluated
        and c not in ("final.epoch", "final.fold", "final.diverged", "final.stopped_early", "final.lr")
        and ("loss" in c or c.startswith("final.val/"))
    ]
    return cols + varied[:6] + lineage + best + finals[:5] + [c for c in ("duration_s", "trial_id") if c in df.columns]


def fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def to_markdown(df: pd.DataFrame, columns: list[str] | None = None) -> str:
    if df.empty:
        return "_no trials_\n"
    columns = columns or summary_columns(df)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in df[columns].iterrows():
        lines.append("| " + " | ".join(fmt(v) for v in row.tolist()) + " |")
    return "\n".join(lines) + "\n"
