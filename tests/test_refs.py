import pytest

from orchestrator import refs


def _record(select=("val/loss", "min")):
    trials = {}
    for i, (variant, seed, best, status) in enumerate([
        ("a", 1, 0.5, "done"), ("a", 2, 0.2, "done"), ("b", 1, 0.3, "done"), ("b", 2, 0.1, "error"),
    ]):
        tid = f"t{i}"
        trials[tid] = {"trial_id": tid, "name": f"pre/{variant}/s{seed}", "variant": variant, "seed": seed,
                       "status": status, "best": best, "checkpoint": f"/ck/{tid}", "config": {"hidden_size": 8 * (i + 1)}}
    return {"stage": "pre", "select": {"metric": select[0], "mode": select[1]} if select else None, "trials": trials}


def test_parse_forms():
    r = refs.parse("${pre.best}")
    assert (r.stage, r.selector, r.field, r.fan_out) == ("pre", "best", "checkpoint", False)
    r = refs.parse("${pre.top[3].config.hidden_size}")
    assert (r.selector, r.k, r.field, r.fan_out) == ("top", 3, "config.hidden_size", True)
    r = refs.parse("${pre.trials[exp1_baseline].trial_id}")
    assert (r.selector, r.variant, r.field) == ("trials", "exp1_baseline", "trial_id")
    for bad in ("${pre}", "${pre.worst}", "x${pre.best}", "${pre.best.nope}", "${pre.top[].checkpoint}"):
        with pytest.raises(refs.RefError):
            refs.parse(bad)


def test_best_picks_by_select_among_successful_trials():
    (cfg, lineage, id_cfg), = refs.expand({"encoder": "${pre.best}", "h": "${pre.best.config.hidden_size}"},
                                          {"pre": _record()})
    assert cfg == {"encoder": "/ck/t1", "h": 16}  # t3 has a better value but errored
    assert lineage["pre"]["trial"] == "pre/a/s2"
    assert id_cfg == {"encoder": "ref:t1:checkpoint", "h": "ref:t1:config.hidden_size"}


def test_max_mode_and_variant_selector():
    rec = _record(("acc", "max"))
    (cfg, _, _), = refs.expand({"e": "${pre.best}"}, {"pre": rec})
    assert cfg["e"] == "/ck/t0"
    (cfg, _, _), = refs.expand({"e": "${pre.trials[b]}"}, {"pre": rec})
    assert cfg["e"] == "/ck/t2"


def test_top_k_fans_out_and_fields_move_together():
    out = refs.expand({"e": "${pre.top[2]}", "h": "${pre.top[2].config.hidden_size}"}, {"pre": _record()})
    assert [(c["e"], c["h"]) for c, _, _ in out] == [("/ck/t1", 16), ("/ck/t2", 24)]
    assert [lin["pre.top[2]"]["trial_id"] for _, lin, _ in out] == ["t1", "t2"]


def test_all_fans_out_over_successful_trials_without_select():
    out = refs.expand({"e": "${pre.all}"}, {"pre": _record(select=None)})
    assert sorted(c["e"] for c, _, _ in out) == ["/ck/t0", "/ck/t1", "/ck/t2"]


def test_no_successful_trial_is_an_error():
    rec = _record()
    for t in rec["trials"].values():
        t["status"] = "error"
    with pytest.raises(refs.RefError, match="no successful trial"):
        refs.expand({"e": "${pre.best}"}, {"pre": rec})


def test_nested_values_and_plain_configs():
    (cfg, lineage, _), = refs.expand({"opt": {"enc": "${pre.best}"}, "x": [1, 2]}, {"pre": _record()})
    assert cfg == {"opt": {"enc": "/ck/t1"}, "x": [1, 2]}
    assert refs.expand({"x": 1}, {}) == [({"x": 1}, {}, {"x": 1})]
