"""The evaluation stage through the CLI: Ray Data actors started from inside a Tune trial get
their own resources (the trial's placement group does not capture them, which would wait
forever on a trial that holds its one CPU) and are charged to the trial, the metrics land in
the results table, and a second run of the same model and corpus reuses every cached shard."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import run_here

pytestmark = pytest.mark.e2e

STUDY = """# evaluation with Ray Data actors inside a Tune trial
name: evaluation
stages:
  evaluate:
    trainable: retrieval_eval
    config:
      beir: ["synthetic:beir?docs=120&queries=5&seed=3"]
      shard_size: 40
      encode_workers: 2
      worker_cpus: 0.5
      isotropy_sample: 20
      cache: {cache}
"""


def test_ray_data_encoding_inside_a_trial_and_the_cache_across_studies(tmp_path):
    cache = tmp_path / "embeddings"
    (tmp_path / "a.yaml").write_text(STUDY.format(cache=cache))
    (tmp_path / "b.yaml").write_text(STUDY.format(cache=cache).replace("name: evaluation", "name: again"))
    for name in ("a.yaml", "b.yaml"):
        done = run_here("run", name, "--storage", str(tmp_path / "runs"), cwd=tmp_path, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    table = pd.read_parquet(tmp_path / "runs" / "evaluation" / "results.parquet")
    assert table["status"].tolist() == ["done"] and table["final.final/ndcg@10"].between(0, 1).all()
    # the trial is charged its own CPU and its two actors' half CPUs for its whole run
    record = json.loads((tmp_path / "runs" / "evaluation" / "_orchestrator" / "stages" / "evaluate.json").read_text())
    (trial,) = record["trials"].values()
    assert trial["charged"] == {"cpu": 2.0, "gpu": 0.0}
    assert table["cpu_hours"].iloc[0] * 3600 == pytest.approx(trial["wall_s"] * 2.0)
    metas = [json.loads(p.read_text()) for p in sorted((tmp_path / "runs").glob("*/evaluate/*/metadata.json"))]
    encoded = sorted(next(iter(m["datasets"].values()))["shards_encoded"] for m in metas)
    assert encoded == [0, 3]  # the first study encoded the three shards, the second reused them
    assert len(list(cache.glob("*/shard_*.pt"))) == 3
