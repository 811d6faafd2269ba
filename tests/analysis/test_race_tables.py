"""A raced stage's tables from its record alone: eliminated trials keep their status and decision,
the aggregate and the paired table show an eliminated group as a note, never its truncated
values, and the race section lists every comparison and the saving."""

from __future__ import annotations

import math

from orchestrator.analysis import study_tables
from orchestrator.analysis.rendering import render_markdown
from orchestrator.planning import race_rule

DECISION = {
    "rung": 5,
    "k": 1,
    "rung_level": 0.0416,
    "level": 0.0416,
    "n": 3,
    "seeds": [1, 2, 3],
    "delta": 0.04,
    "ci_low": 0.02,
    "ci_high": 0.06,
    "p": 0.004,
    "test": "t",
    "group": "g-tiny",
    "label": "pre/tiny",
    "lost_to": "pre/good",
    "lost_to_group": "g-good",
    "decided_at": 0.0,
}


def _trial(variant: str, seed: int, status: str, epochs: int, best: float | None) -> dict:
    return {
        "stage": "pre",
        "trial_id": f"{variant}{seed}",
        "name": f"pre/{variant}/s{seed}",
        "variant": variant,
        "seed": seed,
        "status": status,
        "iterations": epochs,
        "wall_s": epochs * 2.0,
        "charged": {"gpu": 1.0, "cpu": 4.0},
        "metrics": {"epoch": epochs, "val/loss": best} if epochs else {},
        "best": best,
        "config": {"lr": 0.01 if variant == "good" else 1e-6},
        "race_group": f"g-{variant}",
        **({"race": DECISION} if status == "eliminated" else {}),
        **({"started": False} if not epochs else {}),
    }


def _record() -> dict:
    trials = [_trial("good", s, "done", 40, 0.12 + s / 1000) for s in (1, 2, 3, 4)]
    trials += [_trial("tiny", s, "eliminated", 6, 0.16 + s / 1000) for s in (1, 2, 3)]
    trials.append(_trial("tiny", 4, "eliminated", 0, None))
    compared = [
        {k: DECISION[k] for k in ("n", "seeds", "delta", "ci_low", "ci_high", "p")}
        | {"group": "g-tiny", "against": "g-good", "level": 0.0416, "eliminated": True, "label": "pre/tiny"}
    ]
    race = {
        "settings": {"first": 5, "factor": 2.0, "alpha": 0.05, "min_seeds": 3, "test": "t"},
        "groups": {"g-good": "pre/good", "g-tiny": "pre/tiny"},
        "eliminated": {"g-tiny": DECISION},
        "rungs": [
            {"rung": 5, "k": 1, "level": 0.0416, "best": "g-good", "best_label": "pre/good", "compared": compared}
        ],
    }
    record = {
        "stage": "pre",
        "state": "complete",
        "select": {"metric": "val/loss", "mode": "min"},
        "compare": {"baseline": "good"},
        "trials": {t["trial_id"]: t for t in trials},
        "race": race,
    }
    race["saving"] = race_rule.saving(record)
    return record


def test_the_saving_counts_epochs_not_run_against_the_longest_full_trial():
    saved = race_rule.saving(_record())
    assert saved["length"] == 40 and saved["trial_epochs_planned"] == 8 * 40
    assert saved["trial_epochs_saved"] == 3 * (40 - 6) + 40 and saved["never_started"] == 1
    assert math.isclose(saved["gpu_hours"], saved["trial_epochs_saved"] * 2.0 / 3600)  # 2 s per epoch, 1 GPU
    assert math.isclose(saved["cpu_hours"], 4 * saved["gpu_hours"])


def test_eliminated_groups_are_noted_not_aggregated_and_not_paired():
    t = study_tables.build({"pre": _record()})
    trials = t.trials.set_index("trial")
    assert trials.loc["pre/tiny/s1", "status"] == "eliminated" and trials.loc["pre/tiny/s1", "race.rung"] == 5
    assert trials.loc["pre/tiny/s2", "race.lost_to"] == "pre/good" and trials.loc["pre/tiny/s2", "race.p"] == 0.004
    agg = t.aggregated["pre"].set_index("variant")
    assert agg.loc["good", "n"] == 4 and math.isclose(agg.loc["good", "best.val/loss:mean"], 0.1225)
    assert math.isnan(agg.loc["tiny", "best.val/loss:mean"])  # its truncated values are not averaged
    assert agg.loc["tiny", "n"] == 3 and agg.loc["tiny", "trials"] == 4  # seeds that ran; one never started
    assert "eliminated by the race at epoch 5 (worse than pre/good" in agg.loc["tiny", "note"]
    pairs = t.paired["pre"].set_index("variant")
    assert pairs.loc["tiny", "n"] == 0 and "eliminated by the race" in pairs.loc["tiny", "note"]
    assert "best.val/loss:delta" not in pairs.columns or math.isnan(pairs.loc["tiny", "best.val/loss:delta"])


def test_the_markdown_has_the_race_section_with_each_comparison_and_the_saving():
    text = render_markdown(study_tables.build({"pre": _record()}))
    assert "### pre: race" in text
    assert "| 5 | pre/tiny | pre/good | 3 | +0.04 | 0.02 to 0.06 | 0.004 | 0.0416 | yes |" in text
    assert "Saved: 1 of 2 groups eliminated (4 trials, 1 never started); 142 of 320 trial-epochs not run (44%)" in text


def test_the_latex_table_says_eliminated_instead_of_blank_cells():
    from orchestrator.analysis.rendering import aggregate_latex

    t = study_tables.build({"pre": _record()})
    text = aggregate_latex(t.aggregated["pre"], t.selects)
    row = next(line for line in text.splitlines() if line.startswith("pre & tiny"))
    assert row.endswith(r"\multicolumn{2}{l}{eliminated by the race} \\"), row  # best and final val/loss
