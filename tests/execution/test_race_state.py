"""A raced stage's bookkeeping without Ray (`execution.race.StageRace`): a rung waits for every
surviving group's seeds, is decided once, tests only groups with something left to run, and a
record read back by a resumed run keeps its decisions and values."""

from __future__ import annotations

from types import SimpleNamespace

from orchestrator.execution.race import StageRace
from orchestrator.study.race_settings import Race
from orchestrator.study.schema import Select


def _plan(**race) -> SimpleNamespace:
    stage = SimpleNamespace(race=Race(first=2, **race), select=Select(metric="val/loss", mode="min"))
    return SimpleNamespace(stage=stage)


def _race(record: dict | None = None, **settings) -> StageRace:
    race = StageRace(_plan(**settings), record if record is not None else {})
    for group in ("good", "bad"):
        for seed in (1, 2, 3):
            race.add(f"{group}{seed}", group, f"pre/{group}", seed)
    return race


def _report(race: StageRace, tid: str, epoch: int) -> list[dict]:
    seed = int(tid[-1])  # a seed effect both groups share, and one of the bad group's own
    worse = 1.0 + 0.003 * seed**2 if tid.startswith("bad") else 0.0
    return race.on_result(tid, epoch, 1.0 + worse + seed * 0.01 + 1.0 / epoch)


def test_a_rung_waits_for_every_groups_seeds_then_is_decided_once():
    race = _race()
    for tid in ("good1", "good2", "good3", "bad1", "bad2"):
        assert _report(race, tid, 1) == [] and _report(race, tid, 2) == []  # bad3 has not reached epoch 2
    (made,) = _report(race, "bad3", 1) + _report(race, "bad3", 2)
    assert made["label"] == "pre/bad" and made["lost_to"] == "pre/good" and made["rung"] == 2 and made["n"] == 3
    assert race.is_eliminated("bad1") and not race.is_eliminated("good1")
    assert [r["rung"] for r in race.state["rungs"]] == [2]
    assert _report(race, "bad1", 3) == []  # a decided rung is not decided again


def test_groups_whose_trials_all_ended_are_not_tested():
    race = _race()
    for tid in ("bad1", "bad2", "bad3"):
        _report(race, tid, 1)
        race.on_end(tid, "done", 2.0, 1)  # short trials, ended before the first rung
    made = []
    for tid in ("good1", "good2", "good3"):
        made += _report(race, tid, 1) + _report(race, tid, 2)
    assert made == []  # nothing of `bad` is left to stop: eliminating it would save nothing
    (rung,) = race.state["rungs"]
    assert rung["best"] == "good" and rung["compared"] == []


def test_a_resumed_run_keeps_the_decisions_and_values_of_the_record():
    record: dict = {}
    first = _race(record)
    for tid in ("good1", "good2", "good3", "bad1", "bad2", "bad3"):
        _report(first, tid, 1)
        _report(first, tid, 2)
    decided = dict(record["race"]["eliminated"])
    assert decided
    again = _race(record)  # a new driver reads the saved record
    assert again.is_eliminated("bad2") and again.state["eliminated"] == decided
    assert again.step() == []  # nothing is raced again
    kept = record["race"]["values"]["good1"]["2"]
    again.on_result("good1", 2, 99.0)  # a resumed trial repeats the epochs after its checkpoint
    assert again.state["values"]["good1"] == {"2": kept}  # the first report of a rung counts
