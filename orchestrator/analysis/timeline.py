"""The study's timeline (the report's `timeline.png`): every attempt of every trial a bar on a
time axis, coloured by stage, one row per slot the trials occupied at once, so that where the
cluster sat idle, and what waited on what, can be seen.

From the records only (each trial's `attempts`: [start, end] in epoch seconds, as the driver saw
them), so it draws for a study on S3 from any machine. Rows: the first free row of a greedy
packing by start time (the smallest number of rows in which no two bars overlap: as many rows as
slots were busy at once). The title says the makespan and the share of those slots left idle.
"""

from __future__ import annotations

import io

COLOURS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f"]


def bars(records: dict[str, dict]) -> list[tuple[str, str, float, float]]:
    """(stage, trial name, start, end) of every recorded attempt, in start order."""
    out = []
    for name, record in records.items():
        for trial in record.get("trials", {}).values():
            for start, end in trial.get("attempts") or []:
                if start is not None and end is not None and end >= start:
                    out.append((name, trial.get("name", ""), float(start), float(end)))
    return sorted(out, key=lambda b: (b[2], b[3]))


def rows(spans: list[tuple[str, str, float, float]]) -> list[int]:
    """The row of each bar: the first row whose last bar ended before this one starts."""
    ends: list[float] = []
    out = []
    for _, _, start, end in spans:
        row = next((i for i, e in enumerate(ends) if e <= start + 1e-6), None)
        if row is None:
            ends.append(end)
            row = len(ends) - 1
        else:
            ends[row] = end
        out.append(row)
    return out


def draw(records: dict[str, dict], order: list[str]) -> bytes | None:
    """The PNG of the timeline, or None when no trial has recorded attempts."""
    spans = bars(records)
    if not spans:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    placed = rows(spans)
    origin = spans[0][2]
    makespan = max(end for *_, end in spans) - origin
    colour = {stage: COLOURS[i % len(COLOURS)] for i, stage in enumerate(order)}
    height = max(2.0, 0.35 * (max(placed) + 1) + 1.2)
    fig, ax = plt.subplots(figsize=(9.0, height), dpi=100)
    busy = 0.0
    for (stage, _, start, end), row in zip(spans, placed):
        ax.barh(
            row,
            end - start,
            left=start - origin,
            height=0.8,
            color=colour.get(stage, "#999999"),
            edgecolor="white",  # back-to-back trials on one slot stay apart
            linewidth=1.5,
        )
        busy += end - start
    slots = max(placed) + 1
    idle = 1.0 - busy / (slots * makespan) if makespan > 0 else 0.0
    ax.set_yticks(range(slots), [f"slot {i + 1}" for i in range(slots)])
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first trial started")
    ax.set_title(f"{len(spans)} trial attempts on {slots} slot(s): makespan {makespan:.1f} s, {idle:.0%} idle")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(handles=[Patch(color=colour[s], label=s) for s in order if s in colour], fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
