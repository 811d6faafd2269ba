"""A study that would expand to more than `limits.max_trials` trials is refused before anything
expands, in one line naming the count and the largest factors (validate, plan and run alike)."""

from __future__ import annotations

import pytest

from orchestrator.errors import UserError
from orchestrator.planning import expand
from orchestrator.planning.expand import load_plan
from tests.conftest import run_cli

STUDY = """# a grid
name: big
{limits}
stages:
  pretrain:
    trainable: lstm_mae_pretrain
    grid:
      lr: {lrs}
      weight_decay: {wds}
    config: {{data: "synthetic:ohlc?n=200&length=40", window_length: 40}}
    seeds: [0, 1]
"""


def _write(tmp_path, lrs: int, wds: int, limits: str = "") -> str:
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.format(limits=limits, lrs=[1e-3 * (i + 1) for i in range(lrs)], wds=list(range(wds))))
    return path


def test_a_million_trials_are_refused_without_expanding_any(tmp_path, monkeypatch):
    def no_expansion(*_):
        raise AssertionError("expanded a study over the limit")

    monkeypatch.setattr(expand._StageExpansion, "expand", no_expansion)
    with pytest.raises(UserError) as err:
        load_plan(_write(tmp_path, 1000, 500))
    (problem,) = err.value.problems
    assert str(problem).endswith(")") and problem.line == 8 and problem.path == "stages.pretrain.grid.lr"
    assert "the study expands to 1,000,000 trials" in str(problem)
    assert "more than limits.max_trials (20,000); largest factors: pretrain: grid.lr 1,000, " in str(problem)
    assert "pretrain: grid.weight_decay 500, pretrain: seeds 2" in str(problem)


def test_the_limit_is_a_setting(tmp_path):
    assert load_plan(_write(tmp_path, 5, 3, "limits: {max_trials: 30}")).num_trials == 30
    with pytest.raises(UserError, match="expands to 32 trials, more than limits.max_trials \\(30\\)"):
        load_plan(_write(tmp_path, 4, 4, "limits: {max_trials: 30}"))


@pytest.mark.parametrize("command", ["validate", "plan", "run"])
def test_every_command_refuses_in_one_line(tmp_path, command):
    _write(tmp_path, 1000, 500)
    done = run_cli(command, "study.yaml", cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    (line,) = [x for x in done.stderr.splitlines() if x.strip()]
    assert "expands to 1,000,000 trials" in line and "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()  # run started nothing and wrote nothing


def test_plan_of_a_study_at_the_limit_lists_the_first_trials_and_the_count(tmp_path, cli):
    """20,000 rows of a terminal table take rich ~12 s to lay out; `plan` shows the first 50 per
    stage and says how many more `plan --json` lists (2.6 s for the whole plan on this machine)."""
    import json
    import re

    _write(tmp_path, 100, 100)  # x 2 seeds
    code, out, err = cli("plan", tmp_path / "study.yaml", "--cpus", "4", "--gpus", "0")
    assert code == 0, out + err
    assert "... and 19,950 more trials (`plan --json` lists every one)" in out
    assert sum(bool(re.match(r"^[0-9a-f]{12} ", line)) for line in out.splitlines()) == 50  # trial rows
    code, out, _ = cli("plan", tmp_path / "study.yaml", "--json")
    assert code == 0 and len(json.loads(out)["stages"][0]["rows"]) == 20_000
