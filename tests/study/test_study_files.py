"""Every study file in the repo loads and expands; the seed's matrix plans as five experiments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import trainables
from orchestrator.planning.expand import load_plan
from tests.conftest import REPO

STUDIES = sorted(
    [REPO / "matrix.yaml", *(REPO / "search_spaces").glob("*.yaml"), *(REPO / "examples").glob("*/study.yaml")]
)


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_every_study_file_validates(path: Path):
    text = path.read_text()
    assert text.startswith("#"), "every study file starts with a comment header saying how to run it"
    plan = load_plan(path, check_inputs="synthetic:" in text)
    assert plan.num_trials > 0
    for sp in plan.stages.values():
        assert sp.stage.trainable in trainables.registered() or sp.trainable.kind == "file"


def test_seed_matrix_plans_five_named_experiments(cli):
    code, out, err = cli("plan", REPO / "search_spaces" / "lstm_pretrain.yaml", "--json", "--gpus", "1", "--cpus", "16")
    assert code == 0, err
    data = json.loads(out)
    rows = {r["variant"]: r["differs"] for r in data["stages"][0]["rows"]}
    assert rows == {
        "exp1_baseline": {"aug_multiplier": 4, "epochs": 75, "mask_strategy": "patch", "time_warp_sigma": 0.12},
        "exp2_conservative": {"aug_multiplier": 3, "epochs": 50, "mask_strategy": "patch", "time_warp_sigma": 0.10},
        "exp3_aggressive": {"aug_multiplier": 5, "epochs": 100, "mask_strategy": "patch", "time_warp_sigma": 0.15},
        "exp4_block_mask": {"aug_multiplier": 4, "epochs": 75, "mask_strategy": "block", "time_warp_sigma": 0.12},
        "exp5_random_mask": {"aug_multiplier": 4, "epochs": 75, "mask_strategy": "random", "time_warp_sigma": 0.12},
    }
    stage = data["stages"][0]
    assert stage["concurrent"] == 5 and stage["waves"] == 1  # 0.2 GPU each: five share one GPU
    assert stage["estimate"]["wall_minutes"] == 40.0 and stage["estimate"]["source"] == "declared"
    assert stage["estimate"]["gpu_hours"] == pytest.approx(5 * 40 / 60 * 0.2)


def test_plan_drops_gpus_on_a_cpu_cluster_and_counts_waves(cli):
    code, out, _ = cli("plan", REPO / "matrix.yaml", "--json", "--gpus", "0", "--cpus", "2")
    stage = json.loads(out)["stages"][0]
    assert stage["resources"] == {"cpu": 1.0, "gpu": 0.0, "workers": 1} and "no GPUs" in stage["note"]
    assert stage["concurrent"] == 2 and stage["waves"] == 3


def test_trial_ids_are_stable_content_hashes():
    a = load_plan(REPO / "matrix.yaml")
    b = load_plan(REPO / "matrix.yaml")
    ids = [t.id for t in a.stages["pretrain"].trials]
    assert ids == [t.id for t in b.stages["pretrain"].trials] and len(set(ids)) == len(ids)


def test_quick_start_is_a_chain_with_selection_and_comparison():
    plan = load_plan(REPO / "matrix.yaml")
    pre, fine = plan.stages["pretrain"].stage, plan.stages["finetune"].stage
    assert fine.needs == ["pretrain"] and pre.select is not None
    assert fine.select is not None and fine.select.metric == "oof/balanced_accuracy"
    assert fine.compare is not None and fine.compare.baseline == "scratch"


def test_plan_packs_trials_node_by_node_on_a_cluster_file(cli, write_study):
    from orchestrator.planning.resources import ClusterShape, concurrency

    two_nodes = ClusterShape(cpus=16, gpus=8, nodes=((8, 4), (8, 4)))
    assert concurrency({"cpu": 0.5, "gpu": 0.3, "workers": 1}, two_nodes, None) == 24  # 3 per GPU, not 3.33
    assert (
        concurrency({"cpu": 2, "gpu": 6, "workers": 2}, two_nodes, None) == 1
    )  # 3-GPU workers: 1 per node, 2 per trial
    assert concurrency({"cpu": 2, "gpu": 8, "workers": 1}, two_nodes, None) == 0  # 8 GPUs exist, not on one node
    study = write_study("""\
        # packing
        name: pack
        defaults: {seeds: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}
        stages:
          small:
            trainable: lstm_mae_pretrain
            resources: {cpu: 2, gpu: 0.25}
            config: {data: "synthetic:ohlc?n=60", epochs: 1}
          wide:
            trainable: lstm_mae_pretrain
            resources: {cpu: 4, gpu: 1, workers: 8}
            config: {data: "synthetic:ohlc?n=60", epochs: 1}
    """)
    code, out, err = cli("plan", study, "--cluster", "p4d", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["cluster"]["gpus"] == 32 and len(data["cluster"]["nodes"]) == 4 and data["cluster"]["name"] == "p4d"
    small, wide = data["stages"]
    assert small["concurrent"] == 10 and small["waves"] == 1
    assert wide["resources"] == {"cpu": 32, "gpu": 8, "workers": 8} and wide["concurrent"] == 4 and wide["waves"] == 3
    code, out, err = cli("plan", study, "--cluster", "no-such-cluster")
    assert code == 2 and "known: p4d" in err


def test_within_seed_is_not_part_of_the_study_identity(tmp_path):
    """How tables group seeds changes no trial: a stored study (also one stored before the
    setting existed) continues when only that changes."""
    from orchestrator.execution.study_folder import spec_hash
    from orchestrator.planning.expand import load_plan

    text = (REPO / "matrix.yaml").read_text()
    plain, grouped = tmp_path / "a.yaml", tmp_path / "b.yaml"
    plain.write_text(text)
    grouped.write_text(
        text.replace("    compare: {baseline: scratch}", "    compare: {baseline: scratch}\n    within_seed: mean")
    )
    assert load_plan(grouped, check_inputs=False).study.stages["finetune"].within_seed == "mean"
    assert spec_hash(load_plan(plain, check_inputs=False)) == spec_hash(load_plan(grouped, check_inputs=False))


def test_budget_notify_and_limits_are_not_part_of_the_study_identity(tmp_path):
    """A study stopped by its budget runs again with a larger cap in the same storage; a study
    stored by the release that hashed `limits` and `notify` (2026-12-02) still continues."""
    from orchestrator.execution.study_folder import _same_study, spec_hash
    from orchestrator.planning.expand import load_plan

    text = (REPO / "matrix.yaml").read_text()
    plain, capped = tmp_path / "a.yaml", tmp_path / "b.yaml"
    plain.write_text(text)
    capped.write_text(text + "budget: {usd: 50, gpu_price: p4d-a100-ondemand}\nlimits: {max_trials: 100}\n")
    a, b = load_plan(plain, check_inputs=False), load_plan(capped, check_inputs=False)
    assert b.study.budget.usd == 50 and spec_hash(a) == spec_hash(b)
    legacy = spec_hash(a, {"storage", "description"})  # what that release stored
    assert legacy != spec_hash(a) and _same_study(a, legacy) and not _same_study(a, "0" * 16)
