"""Gates: conditions on a finished stage that decide whether the stages needing it run.

The value a gate reads from each successful trial is its best value of the metric over its
reports when the metric is the stage's `select` metric, else its final value. `over: best`
takes the best trial (the highest for `>`/`>=`, the lowest for `<`/`<=`), `over: mean` the mean
over successful trials. A gate with no successful trial reporting the metric fails.
"""

from __future__ import annotations

import math
import operator

from orchestrator.study.schema import Gate

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def trial_value(trial: dict, metric: str, select: dict | None) -> float | None:
    if select and select.get("metric") == metric and trial.get("best") is not None:
        return float(trial["best"])
    value = (trial.get("metrics") or {}).get(metric)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def evaluate(record: dict, gates: list[Gate]) -> list[dict]:
    out = []
    for gate in gates:
        values = [
            v
            for t in record["trials"].values()
            if t["status"] == "done"
            for v in [trial_value(t, gate.metric, record.get("select"))]
            if v is not None and math.isfinite(v)
        ]
        if not values:
            measured = None
        elif gate.over == "mean":
            measured = sum(values) / len(values)
        else:
            measured = max(values) if gate.op in (">", ">=") else min(values)
        passed = measured is not None and OPS[gate.op](measured, gate.value)
        out.append(
            {
                **gate.model_dump(),
                "measured": measured,
                "n": len(values),
                "passed": passed,
                "text": f"{gate.describe()}: {'passed' if passed else 'failed'}, measured "
                + (
                    f"{measured:.4g} over {len(values)} trial(s)"
                    if measured is not None
                    else "nothing (no successful trial reports it)"
                ),
            }
        )
    return out


def failed(record: dict | None) -> list[dict]:
    return [g for g in (record or {}).get("gates", []) if not g["passed"]]
