"""Tables as text: seed aggregates and paired deltas in Markdown and LaTeX (booktabs), and every
table of a study as one Markdown document (`results.md`, the report's results section)."""

from __future__ import annotations

import math
import re

import pandas as pd

from orchestrator.analysis import trials_table
from orchestrator.analysis.race_tables import ELIMINATED, race_markdown

LOWER_IS_BETTER = re.compile(r"loss|mse|mae|error|perplexity|time|hours", re.I)
HIGHER_IS_BETTER = re.compile(r"acc|f1|ndcg|recall|mrr|precision|separation|isotropy|auc|map", re.I)


def better(metric: str, select: dict | None = None) -> str | None:
    """'min' / 'max' for a metric column (the stage's select mode wins), None when unknown."""
    name = metric.split(":")[0].removeprefix("best.").removeprefix("final.")
    if select and select.get("metric") == name:
        return select["mode"]
    if LOWER_IS_BETTER.search(name):
        return "min"
    if HIGHER_IS_BETTER.search(name):
        return "max"
    return None


def metric_names(agg: pd.DataFrame, suffix: str = ":mean") -> list[str]:
    return [c[: -len(suffix)] for c in agg.columns if c.endswith(suffix)]


BOOKKEEPING = ("seeds", "trials", "note")


def key_columns(table: pd.DataFrame) -> list[str]:
    """The grouping columns of an aggregate or paired table (what a row is), with n."""
    return [c for c in table.columns if ":" not in c and c not in BOOKKEEPING]


def _notes(table: pd.DataFrame) -> bool:
    return "note" in table.columns and table["note"].fillna("").astype(str).str.len().gt(0).any()


def _metric_n(row: pd.Series, m: str) -> str:
    """' (n=2)' when fewer seeds have this metric than the row has."""
    k = row.get(f"{m}:n")
    if k is None or (isinstance(k, float) and math.isnan(k)) or "n" not in row or int(k) == int(row["n"]):
        return ""
    return f" (n={int(k)})"


def _num(v: float, digits: int = 4) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}g}"


def cell(row: pd.Series, m: str) -> str:
    mean, lo, hi = row.get(f"{m}:mean"), row.get(f"{m}:ci_low"), row.get(f"{m}:ci_high")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    if lo is None or (isinstance(lo, float) and math.isnan(lo)):
        return _num(mean) + _metric_n(row, m)
    return f"{_num(mean)} ± {_num((hi - lo) / 2, 2)}" + _metric_n(row, m)


def aggregate_markdown(agg: pd.DataFrame) -> str:
    """`mean ± CI half-width` per metric, n per group."""
    if agg.empty:
        return "_no successful trials to aggregate_\n"
    keys = key_columns(agg)
    metrics = metric_names(agg)
    notes = _notes(agg)
    head = keys + [m for m in metrics] + (["note"] if notes else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in agg.iterrows():
        cells = [_text(row[k]) for k in keys] + [cell(row, m) for m in metrics]
        lines.append("| " + " | ".join(cells + ([_text(row.get("note"))] if notes else [])) + " |")
    return "\n".join(lines) + (
        "\n\nmean ± half-width of the 95% t-interval over seeds; n = independent seeds per "
        "row (a seed's trials averaged first)\n"
    )


def paired_markdown(pairs: pd.DataFrame) -> str:
    if pairs.empty:
        return "_no pairs: no variant shares seeds with the baseline_\n"
    keys = key_columns(pairs)
    metrics = [c[: -len(":delta")] for c in pairs.columns if c.endswith(":delta")]
    notes = _notes(pairs)
    head = keys + [f"Δ {m}" for m in metrics] + (["note"] if notes else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in pairs.iterrows():
        cells = []
        for m in metrics:
            d, lo, hi = row.get(f"{m}:delta"), row.get(f"{m}:delta_ci_low"), row.get(f"{m}:delta_ci_high")
            if d is None or (isinstance(d, float) and math.isnan(d)):
                cells.append("")
            elif isinstance(lo, float) and math.isnan(lo):
                cells.append(f"{d:+.4g}")
            else:
                cells.append(f"{d:+.4g} [{lo:+.3g}, {hi:+.3g}]")
            cells[-1] += _metric_n(row, m) if cells[-1] else ""
        lines.append(
            "| "
            + " | ".join([_text(row[k]) for k in keys] + cells + ([_text(row.get("note"))] if notes else []))
            + " |"
        )
    return "\n".join(lines) + "\n\nΔ = variant - baseline, paired by seed; [95% t-interval]; n = paired seeds\n"


def _text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).replace("|", "\\|")


LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def aggregate_latex(agg: pd.DataFrame, selects: dict[str, dict] | None = None, caption: str = "") -> str:
    """A booktabs table: mean ± CI per metric; the best mean of each metric per stage in bold."""
    keys = key_columns(agg)
    metrics = metric_names(agg)
    bold: set[tuple[int, str]] = set()
    for m in metrics:
        for stage, group in agg.groupby("stage") if "stage" in agg else [("", agg)]:
            mode = better(m, (selects or {}).get(stage))
            values = group[f"{m}:mean"].dropna()
            if mode and len(values) > 1:
                bold.add(((values.idxmin() if mode == "min" else values.idxmax()), m))
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\begin{tabular}{" + "l" * len(keys) + "r" * len(metrics) + "}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in keys + [m.removeprefix("best.").removeprefix("final.") for m in metrics])
        + r" \\",
        r"\midrule",
    ]
    for idx, row in agg.iterrows():
        cells = [latex_escape(row[k]) for k in keys]
        eliminated = str(row.get("note") or "").startswith(ELIMINATED)
        for i, m in enumerate(metrics):
            text = latex_escape(cell(row, m)).replace("±", r"$\pm$")
            if eliminated and i == 0:  # its values stop early: said, not shown
                text = r"\multicolumn{" + str(len(metrics)) + r"}{l}{" + ELIMINATED + "}"
            elif eliminated:
                continue
            cells.append(r"\textbf{" + text + "}" if (idx, m) in bold and text else text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(r"\caption{" + latex_escape(caption) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def render_markdown(t) -> str:
    """Per stage: the trial table, the seed aggregate and the paired comparison (if any); what
    the study spent of its budget first, when it has one."""
    parts = [f"{t.budget}\n"] if t.budget else []
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
        parts.append(trials_table.to_markdown(rows, [c for c in trials_table.summary_columns(rows) if c != "stage"]))
        agg = t.aggregated.get(name)
        if agg is not None and not agg.empty and (agg["n"] > 1).any():
            parts.append(f"\n### {name}: over seeds\n\n" + aggregate_markdown(agg.drop(columns=["stage"])))
        if record.get("race"):
            parts.append(f"\n### {name}: race\n\n" + race_markdown(record))
        pairs = t.paired.get(name)
        if pairs is not None:
            parts.append(f"\n### {name}: against the baseline\n\n" + paired_markdown(pairs.drop(columns=["stage"])))
        parts.append("")
    return "\n".join(parts)
