"""Per-trial diagnostics in reports: a trial that leaves `diagnostics.json` in its folder (see
`trainables/metrics/span_diagnostics.py`) gets a section with its success criteria as pass/fail lines,
its final metrics and its plots.

`diagnostics.json`: {"criteria": [{"level", "metric", "condition", "value", "passed"}],
"final": {metric: value}, "figures": [PNG names in the trial folder], plus free keys}.
"""

from __future__ import annotations

import json

from rich.console import Console

from orchestrator.storage.store import Store

DIAGNOSTICS = "diagnostics.json"


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def section(trial: Store, title: str, figures_out: Store | None, figure_prefix: str = "") -> list[str]:
    """Markdown lines for one trial; copies its figures into `figures_out` under `figure_prefix`."""
    diag = json.loads(trial.read_text(DIAGNOSTICS))
    md = [f"### {title}", ""]
    reduction = diag.get("val_loss_reduction")
    if diag.get("epochs") is not None:
        md.append(
            f"Epochs: {diag['epochs']}; best epoch: {diag.get('best_epoch')}; validation task loss "
            f"{_fmt(diag.get('val_task_loss_first'))} -> {_fmt(diag.get('val_task_loss_best'))}"
            + (f" ({reduction:.1%} lower)." if isinstance(reduction, (int, float)) else ".")
        )
        md.append("")
    criteria = diag.get("criteria") or []
    if criteria:
        md += ["| level | criterion | value | result |", "|---|---|---|---|"]
        md += [
            f"| {c['level']} | {c['metric']} {c['condition']} | {_fmt(c.get('value'))} | "
            f"{'PASS' if c['passed'] else 'FAIL'} |"
            for c in criteria
        ]
        md.append("")
    final = diag.get("final") or {}
    if final:
        md += ["| final metric | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in final.items()] + [""]
    if diag.get("notes"):
        md += [f"_{diag['notes']}_", ""]
    for name in diag.get("figures") or []:
        if not trial.exists(name):
            continue
        target = f"{figure_prefix}{name}"
        if figures_out is not None:
            figures_out.write_bytes(trial.read_bytes(name), *target.split("/"))
        md += [f"![{title} {name}]({target})", ""]
    return md


def is_trial_folder(path: str) -> bool:
    try:
        return Store(path).exists(DIAGNOSTICS)
    except OSError:
        return False


def write_trial_report(path: str, console: Console) -> str:
    """`report TRIAL_FOLDER`: report.md beside the trial's own files (figures referenced in place)."""
    trial = Store(path)
    text = "\n".join([f"# Trial report: {path}", "", *section(trial, "Diagnostics", None)]) + "\n"
    trial.write_text(text, "report.md")
    console.print(f"report: {trial.child_uri('report.md')}")
    return text
