"""`report RUN`: a Markdown report with plots, written into the study's storage (`report/`).

Sections: the study file, the plan as run, per stage the trial table, the aggregate over seeds
and the paired comparison, learning curves per variant (mean ± std band over seeds), per-trial
diagnostics (success criteria and plots of trials that write `diagnostics.json`), failed and
diverged trials with their reason, and time and cost (GPU-hours x a price from
`cluster/prices.yaml`).
"""

from __future__ import annotations

import io
import math

import pandas as pd
from rich.console import Console

from orchestrator.analysis import study_tables, timeline, trial_report
from orchestrator.analysis.rendering import render_markdown
from orchestrator.errors import Problem, UserError
from orchestrator.planning.budget import Cap, budget_text, read_budget
from orchestrator.planning.costs import NO_PRICES, Prices
from orchestrator.storage.records import STUDY_FILE, STUDY_META, load_records, open_study, read_meta, stage_needs
from orchestrator.storage.store import Store

REPORT_DIR = "report"


def trial_curves(store: Store, trials: pd.DataFrame) -> pd.DataFrame:
    """Every trial's per-iteration metrics (its metrics.csv), with stage/variant/seed columns."""
    frames = []
    for _, row in trials.iterrows():
        rel = f"{row['stage']}/{row['trial_id']}/metrics.csv"
        if not store.exists(rel):
            continue
        df = pd.read_csv(io.BytesIO(store.read_bytes(rel)))
        df["stage"], df["variant"], df["seed"] = row["stage"], row["variant"] or "base", row["seed"]
        df["group"] = row["trial"].rsplit("/", 1)[0]
        df["iteration"] = range(1, len(df) + 1)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def plot_curves(curves: pd.DataFrame, stage: str, metric: str, out: io.BytesIO) -> bool:
    """Mean ± std band over seeds per variant; False when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = curves[(curves["stage"] == stage)]
    if metric not in data.columns or data[metric].dropna().empty:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for group, rows in data.groupby("group"):
        stats = rows.groupby("iteration")[metric].agg(["mean", "std", "count"])
        ax.plot(stats.index, stats["mean"], label=f"{group.split('/', 1)[-1]} (n={int(stats['count'].max())})")
        band = stats["std"].fillna(0)
        ax.fill_between(stats.index, stats["mean"] - band, stats["mean"] + band, alpha=0.2)
    ax.set_xlabel("epoch" if "epoch" in data.columns else "iteration")
    ax.set_ylabel(metric)
    ax.set_title(f"{stage}: {metric} (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, format="png")
    plt.close(fig)
    return True


def curve_metrics(curves: pd.DataFrame, stage: str, select: dict | None) -> list[str]:
    data = curves[curves["stage"] == stage].dropna(axis=1, how="all")
    wanted = ["train/loss", "val/loss"] + ([select["metric"]] if select else [])
    return [m for m in dict.fromkeys(wanted) if m in data.columns and pd.api.types.is_numeric_dtype(data[m])]


def cost_rows(t: study_tables.StudyTables, prices: Prices) -> list[dict]:
    rows = []
    for name in t.records:
        trials = t.trials[t.trials["stage"] == name] if not t.trials.empty else t.trials
        if trials.empty:
            continue
        gpu_h = float(trials["gpu_hours"].sum()) if "gpu_hours" in trials else 0.0
        cpu_h = float(trials.get("cpu_hours", pd.Series([0.0])).sum())
        cost = prices.usd(gpu_h, cpu_h)
        rows.append(
            {
                "stage": name,
                "trials": len(trials),
                "trial_hours": float(trials["duration_s"].sum()) / 3600,
                "gpu_hours": gpu_h,
                "cpu_hours": cpu_h,
                "cost_usd": cost if cost is not None else math.nan,
            }
        )
    return rows


def write_report(run_dir: str, console: Console, gpu_price: str | None = None, gpu_util_threshold: float = 60.0) -> str:
    """Write `report/report.md` (and its figures) into the study's storage; returns the text.
    A trial folder with `diagnostics.json` gets a trial report of its own instead."""
    if trial_report.is_trial_folder(run_dir) and not Store(run_dir).exists(STUDY_META):
        return trial_report.write_trial_report(run_dir, console)
    store = open_study(run_dir)
    meta = read_meta(store)
    records = load_records(store)
    if not records:
        raise UserError(Problem(run_dir, "nothing to report yet (no stage of this study has ended)"))
    saved = read_budget(store)  # a study with a budget has its prices stored
    prices = (Cap.from_dict(saved["cap"]).prices if saved else NO_PRICES).with_gpu_price(gpu_price)
    for record in records.values():  # a race's saving in USD, at these prices (in this report only)
        saving = (record.get("race") or {}).get("saving")
        if saving and prices.priced:
            saving["usd"] = prices.usd(saving["gpu_hours"], saving["cpu_hours"])
    t = study_tables.build(records)
    out = store.child(REPORT_DIR)
    md = [
        f"# Study report: {meta['name']}",
        "",
        f"Storage: `{store.uri}`; created {meta.get('created_at')}; runs: {', '.join(meta.get('runs', []))}; "
        f"git: {(meta.get('git') or {}).get('commit', 'unknown')}",
        "",
    ]
    md += _plan_section(store, records)
    md += ["", "## Results", "", render_markdown(t)]
    md += _timeline_section(records, list(meta.get("stages") or records), out)
    md += _curves_section(store, t, out)
    md += _diagnostics_section(store, t, out)
    md += _failures_section(t)
    md += _utilisation_section(t, gpu_util_threshold)
    md += _cost_section(t, prices, budget_text(saved, records.values()))
    if store.exists(STUDY_FILE):
        md += ["", "## Study file", "", "```yaml", store.read_text(STUDY_FILE).rstrip(), "```"]
    text = "\n".join(md) + "\n"
    out.write_text(text, "report.md")
    n_figures = sum(line.startswith("![") for line in md)
    console.print(f"report: {out.child_uri('report.md')} ({n_figures} figure(s))")
    return text


def _plan_section(store: Store, records: dict[str, dict]) -> list[str]:
    md = ["## Plan", "", "| stage | trainable | trials | state | needs |", "|---|---|---|---|---|"]
    needs = stage_needs(store)
    for name, record in records.items():
        md.append(
            f"| {name} | {record.get('trainable')} | {len(record.get('trials', {}))} | {record.get('state')} | "
            f"{', '.join(record.get('needs') or needs.get(name, []))} |"
        )
    return md


def _timeline_section(records: dict[str, dict], order: list[str], out: Store) -> list[str]:
    """The study's timeline (`orchestrator/analysis/timeline.py`), when its trials recorded when
    they ran."""
    png = timeline.draw(records, order)
    if png is None:
        return []
    out.write_bytes(png, "timeline.png")
    return ["## Timeline", "", "![timeline](timeline.png)", ""]


def _curves_section(store: Store, t: study_tables.StudyTables, out: Store) -> list[str]:
    """Learning curves per stage and metric, written as PNG figures into `out`."""
    curves = trial_curves(store, t.trials) if not t.trials.empty else pd.DataFrame()
    if curves.empty:
        return []
    md = ["## Learning curves", ""]
    for name, record in t.records.items():
        for metric in curve_metrics(curves, name, record.get("select")):
            buf = io.BytesIO()
            if plot_curves(curves, name, metric, buf):
                fname = f"{name}_{metric.replace('/', '_')}.png"
                out.write_bytes(buf.getvalue(), fname)
                md += [f"![{name} {metric}]({fname})", ""]
    return md


def _diagnostics_section(store: Store, t: study_tables.StudyTables, out: Store) -> list[str]:
    """A section per trial that wrote `diagnostics.json`, its figures copied into `out`."""
    diagnosed = (
        [r for _, r in t.trials.iterrows() if store.exists(r["stage"], r["trial_id"], trial_report.DIAGNOSTICS)]
        if not t.trials.empty
        else []
    )
    if not diagnosed:
        return []
    md = ["## Trial diagnostics", ""]
    for r in diagnosed:
        md += trial_report.section(
            store.child(r["stage"], r["trial_id"]), r["trial"], out, f"trials/{r['stage']}/{r['trial_id']}/"
        )
    return md


def _failures_section(t: study_tables.StudyTables) -> list[str]:
    failed = t.trials[t.trials["status"].isin(["error", "diverged"])] if not t.trials.empty else t.trials
    md = ["## Failed and diverged trials", ""]
    if failed.empty:
        md += ["None.", ""]
    else:
        md += [f"- `{r['trial']}` ({r['status']}): {r.get('error') or 'non-finite loss'}" for _, r in failed.iterrows()]
        md.append("")
    skipped = [(n, r) for n, r in t.records.items() if r.get("state") in ("skipped", "failed", "gated")]
    return md + [f"- stage `{n}` {r['state']}: {r.get('reason', '')}" for n, r in skipped] + ([""] if skipped else [])


def _utilisation_section(t: study_tables.StudyTables, threshold: float) -> list[str]:
    """Trials whose GPUs were mostly idle (only for studies whose trials reported utilisation).
    The utilisation is the device's: a trial packed with others (`gpu/share` < 1) is flagged
    only when the device as a whole was idle, and the line says it was shared."""
    if "final.gpu/device_util_mean" not in t.trials.columns:
        return []
    md = ["## GPU utilisation", "", f"Trials below {threshold:.0f}% mean utilisation of their GPUs:", ""]
    flagged = [
        (r["trial"], low_utilisation(r["final.gpu/device_util_mean"], threshold, r.get("final.gpu/share")))
        for _, r in t.trials.iterrows()
        if pd.notna(r.get("final.gpu/device_util_mean"))
    ]
    md += [f"- `{name}`: {why}" for name, why in flagged if why] or ["None."]
    return md + [""]


def low_utilisation(util_mean: float | None, threshold: float, share: float | None = None) -> str | None:
    """The report's flag for a trial below `threshold` percent, with the usual causes."""
    if util_mean is None or util_mean >= threshold:
        return None
    shared = f" (device-wide, shared with the trials packed beside it at gpu {share:g})" if share and share < 1 else ""
    return (
        f"GPU utilisation {util_mean:.0f}%{shared} < {threshold:.0f}%: likely the batch is too small for the GPU, "
        "the input pipeline (data loading, augmentation on the CPU) starves it, or several trials "
        "share the GPU with too little work each"
    )


def _cost_section(t: study_tables.StudyTables, prices: Prices, budget: str | None) -> list[str]:
    md = [
        "## Time and cost",
        "",
        "| stage | trials | trial-hours | GPU-hours | CPU-hours | cost (USD) |",
        "|---|---|---|---|---|---|",
    ]
    for c in cost_rows(t, prices):
        cost = "" if math.isnan(c["cost_usd"]) else f"{c['cost_usd']:.2f}"
        md.append(
            f"| {c['stage']} | {c['trials']} | {c['trial_hours']:.3f} | {c['gpu_hours']:.3f} | "
            f"{c['cpu_hours']:.3f} | {cost} |"
        )
    md.append("")
    md.append(
        f"Prices: {prices.describe()} (cluster/prices.yaml). GPU- and CPU-hours are trial wall time x the "
        "GPUs and CPUs the trial held, every attempt counted."
        if prices.priced
        else "Cost: pass `--gpu-price KEY` (keys in cluster/prices.yaml) to price the GPU-hours."
    )
    if budget:
        md += ["", budget + "."]
    return md
