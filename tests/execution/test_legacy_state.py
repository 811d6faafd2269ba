"""Tune experiments interrupted before the package layout (2026-12) still restore: Tune pickled
the trial-name functions and the recorder proxy under their old module, `orchestrator.runner`."""

from __future__ import annotations

import pickle
import sys
import types

import pytest

from orchestrator.execution import stage_runner


def test_state_pickled_under_the_old_module_path_loads(monkeypatch):
    old = types.ModuleType("orchestrator.runner")

    def _trial_name(trial):
        return "old"

    def _trial_dirname(trial):
        return "old"

    class _RecorderProxy:
        def __init__(self, stage):
            self.stage = stage

    for obj in (_trial_name, _trial_dirname, _RecorderProxy):
        obj.__module__, obj.__qualname__ = "orchestrator.runner", obj.__name__
        setattr(old, obj.__name__, obj)
    monkeypatch.setitem(sys.modules, "orchestrator.runner", old)
    # what Tune's tuner.pkl held: the functions and a proxy instance, by module path and name
    state = pickle.dumps({"names": (_trial_name, _trial_dirname), "callbacks": [_RecorderProxy("pretrain")]})
    monkeypatch.delitem(sys.modules, "orchestrator.runner")
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(state)

    stage_runner._resolve_legacy_pickles()
    loaded = pickle.loads(state)
    assert loaded["names"] == (stage_runner.trial_name, stage_runner.trial_dirname)
    proxy = loaded["callbacks"][0]
    assert isinstance(proxy, stage_runner.RecorderProxy) and proxy.stage == "pretrain"
