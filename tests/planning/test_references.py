import pytest

from orchestrator.planning import references as resolution
from orchestrator.study import references as refs


def _record(select=("val/loss", "min")):
    trials = {}
    for i, (variant, seed, best, status) in enumerate(
        [
            ("a", 1, 0.5, "done"),
            ("a", 2, 0.2, "done"),
            ("b", 1, 0.3, "done"),
            ("b", 2, 0.1, "error"),
        ]
    ):
        tid = f"t{i}"
        trials[tid] = {
            "trial_id": tid,
            "name": f"pre/{variant}/s{seed}",
            "variant": variant,
            "seed": seed,
            "status": status,
            "best": best,
            "checkpoint": f"/ck/{tid}",
            "config": {"hidden_size": 8 * (i + 1)},
        }
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
    ((cfg, lineage, id_cfg),) = resolution.expand(
        {"encoder": "${pre.best}", "h": "${pre.best.config.hidden_size}"}, {"pre": _record()}
    )
    assert cfg == {"encoder": "/ck/t1", "h": 16}  # t3 has a better value but errored
    assert lineage["pre"]["trial"] == "pre/a/s2"
    assert id_cfg == {"encoder": "ref:t1:checkpoint", "h": "ref:t1:config.hidden_size"}


def test_max_mode_and_variant_selector():
    rec = _record(("acc", "max"))
    ((cfg, _, _),) = resolution.expand({"e": "${pre.best}"}, {"pre": rec})
    assert cfg["e"] == "/ck/t0"
    ((cfg, _, _),) = resolution.expand({"e": "${pre.trials[b]}"}, {"pre": rec})
    assert cfg["e"] == "/ck/t2"


def test_top_k_fans_out_and_fields_move_together():
    out = resolution.expand({"e": "${pre.top[2]}", "h": "${pre.top[2].config.hidden_size}"}, {"pre": _record()})
    assert [(c["e"], c["h"]) for c, _, _ in out] == [("/ck/t1", 16), ("/ck/t2", 24)]
    assert [lin["pre.top[2]"]["trial_id"] for _, lin, _ in out] == ["t1", "t2"]


def test_all_fans_out_over_successful_trials_without_select():
    out = resolution.expand({"e": "${pre.all}"}, {"pre": _record(select=None)})
    assert sorted(c["e"] for c, _, _ in out) == ["/ck/t0", "/ck/t1", "/ck/t2"]


def test_no_successful_trial_is_an_error():
    rec = _record()
    for t in rec["trials"].values():
        t["status"] = "error"
    with pytest.raises(refs.RefError, match="no successful trial"):
        resolution.expand({"e": "${pre.best}"}, {"pre": rec})


def test_nested_values_and_plain_configs():
    ((cfg, lineage, _),) = resolution.expand({"opt": {"enc": "${pre.best}"}, "x": [1, 2]}, {"pre": _record()})
    assert cfg == {"opt": {"enc": "/ck/t1"}, "x": [1, 2]}
    assert resolution.expand({"x": 1}, {}) == [({"x": 1}, {}, {"x": 1})]


def test_nan_and_missing_values_never_rank_and_ties_break_by_name():
    rec = _record()
    rec["trials"]["t0"]["best"] = float("nan")  # sorted() would put a NaN anywhere
    rec["trials"]["t2"]["best"] = None
    assert [t["trial_id"] for t in resolution.ranked(rec, resolution.successful(rec))] == ["t1"]
    for mode in ("min", "max"):
        tied = _record(("val/loss", mode))
        for t in tied["trials"].values():
            t["best"] = 0.5
        assert [t["name"] for t in resolution.ranked(tied, resolution.successful(tied))] == [
            "pre/a/s1",
            "pre/a/s2",
            "pre/b/s1",
        ]
    for t in rec["trials"].values():
        t["best"] = None
    with pytest.raises(refs.RefError, match="reported a finite value of its select metric 'val/loss'"):
        resolution.expand({"e": "${pre.best}"}, {"pre": rec})


def test_latest_checkpoint_is_the_newest_and_checkpoint_the_best_epochs():
    rec = _record()
    for t in rec["trials"].values():
        t["latest_checkpoint"] = t["checkpoint"] + "-latest"
    ((cfg, _, ids),) = resolution.expand(
        {"best": "${pre.best}", "resume": "${pre.best.latest_checkpoint}"}, {"pre": rec}
    )
    assert cfg == {"best": "/ck/t1", "resume": "/ck/t1-latest"}
    assert ids["resume"] == "ref:t1:latest_checkpoint"


def test_trials_that_coincide_after_resolution_are_an_error_naming_both(tmp_path):
    from orchestrator.planning.expand import load_plan
    from orchestrator.planning.references import resolve_stage

    study = tmp_path / "study.yaml"
    study.write_text("""\
name: dup
stages:
  pre:
    trainable: lstm_mae_pretrain
    config: {data: "synthetic:ohlc?n=40&length=40", window_length: 40}
    select: {metric: val/loss, mode: min}
  fine:
    needs: [pre]
    trainable: lstm_classifier_finetune
    config: {data: "synthetic:ohlc?n=40&length=40&labeled=1", window_length: 40}
    variants:
      best: {encoder: "${pre.best}"}
      first: {encoder: "${pre.top[1]}"}
""")
    plan = load_plan(study, check_inputs=False)
    rec = _record()
    with pytest.raises(refs.RefError, match=r"trials fine/best/s0 and fine/first/s0@a/s2 are the same trial"):
        resolve_stage(plan.stages["fine"], {"pre": rec}, tmp_path)
    rec["trials"]["t1"]["status"] = "error"  # now best is pre/b/s1 and top[1] too: still the same
    with pytest.raises(refs.RefError, match="pre/b/s1"):
        resolve_stage(plan.stages["fine"], {"pre": rec}, tmp_path)
