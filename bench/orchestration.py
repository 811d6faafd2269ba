"""Orchestration overhead: how close a study gets to the ideal makespan on 2 CPU slots.

    python bench/orchestration.py [--trials 16] [--work-s 3] [--json bench/results/orchestration_16x3.json]
    python bench/orchestration.py --two-stage [--work-s 4] [--json bench/results/orchestration_two_stage.json]

`--two-stage` (issue 29): stage A of 8 pretraining trials of unequal length (1x, 2x and 3x the
base work: 3, 3 and 2 trials), stage B one fine-tuning trial per A trial (`${A.all.checkpoint}`,
~1x), run as one study (`study_tune`: each B trial starts when its A trial has ended) and, in
the same run, stage after stage (the per-stage runner of earlier releases, which the orchestrator
keeps for studies it interrupted). Work = each trial's time inside its function; ideal = the
larger of total work / 2 slots and the critical path (the longest A_i + B_i); makespan = from
the experiment's start to the last trial's end (Ray's start-up excluded).

The same real trainable (`lstm_mae_pretrain`, a fixed number of epochs on 300 synthetic windows
read from a Parquet file, no early stopping, one thread per trial) runs N times three ways,
one after another:
- `sequential`: a plain Python loop in one process (LocalSession), no Ray;
- `orchestrator`: `python -m orchestrator run` on a local Ray with 2 CPUs (a real CLI process);
- `tune-defaults`: plain Ray Tune with its defaults (no actor reuse, a checkpoint every epoch),
  the same trainable through the same session, in its own process.
Work is measured inside the trials (the sum of their epoch times); the ideal makespan is
sum(work) / 2 slots; efficiency = ideal / makespan, where makespan is the Tuner's wall time
(Ray's start-up is excluded and reported separately); per-trial overhead =
(makespan x slots - sum(work)) / N.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SLOTS = 2
CONFIG = {"hidden_size": 32, "batch_size": 64, "aug_multiplier": 1, "early_stopping_patience": None}


def write_data(folder: Path) -> str:
    """300 windows of 105 bars as a Parquet file: every trial reads it, as in a real study."""
    import pyarrow.parquet as pq

    from trainables.data import synthetic_ohlc as synthetic
    from trainables.data.ohlc import windows_table

    data = synthetic.generate(300, 105, seed=0)
    path = folder / "windows.parquet"
    pq.write_table(windows_table(data["ohlc"], list(data["window_id"])), path)
    return str(path)


def calibrate(work_s: float) -> int:
    """Epochs for about `work_s` seconds of training on one thread."""
    import torch

    from trainables import lstm_mae_pretrain as mae
    from trainables.runtime.session import LocalSession

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        session = LocalSession(tmp)
        mae.train(dict(CONFIG, epochs=4), session)
    per_epoch = sorted(m["epoch_time_s"] for m in session.metrics)[1]  # skip the warm-up epoch
    return max(1, round(work_s / per_epoch))


def run_sequential(trials: int, epochs: int) -> dict:
    import torch

    from trainables import lstm_mae_pretrain as mae
    from trainables.runtime.session import LocalSession

    torch.set_num_threads(1)
    work = 0.0
    t0 = time.perf_counter()
    for seed in range(trials):
        with tempfile.TemporaryDirectory() as tmp:
            session = LocalSession(tmp, checkpoint_every=epochs)
            mae.train(dict(CONFIG, epochs=epochs, seed=seed), session)
            work += sum(m["epoch_time_s"] for m in session.metrics)
    return {"makespan_s": time.perf_counter() - t0, "work_s": work}


def run_orchestrator(trials: int, epochs: int, folder: Path) -> dict:
    study = folder / "study.yaml"
    config = ", ".join(f"{k}: {json.dumps(v) if v is not None else 'null'}" for k, v in CONFIG.items())
    study.write_text(
        textwrap.dedent(f"""\
        name: bench
        storage: {folder / "runs"}
        defaults: {{seeds: [{", ".join(str(s) for s in range(trials))}], resources: {{cpu: 1}}}}
        stages:
          work:
            trainable: lstm_mae_pretrain
            config: {{{config}, epochs: {epochs}}}
        """)
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", str(study), "--num-cpus", str(SLOTS)],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder,
    )
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout[-3000:] + proc.stderr[-3000:])
    ray_start = float(re.search(r"started a local Ray: .*\(([\d.]+) s\)", proc.stdout).group(1))
    root = folder / "runs" / "bench"
    record = json.loads((root / "_orchestrator" / "stages" / "work.json").read_text())
    work = sum(pd.read_csv(root / "work" / tid / "metrics.csv")["epoch_time_s"].sum() for tid in record["trials"])
    in_trials = sum(t["duration_s"] for t in record["trials"].values())
    # Start-up of each trial worker (Ray actor): from the Tuner's start until its first trial
    # has imported the trainable (process spawn, Tune's actor set-up, `import torch`...).
    first_start: dict[int, tuple[float, float]] = {}
    spans: dict[int, list[tuple[float, float]]] = {}  # per worker process: (start, end) of its trials
    for tid, t in record["trials"].items():
        meta = json.loads((root / "work" / tid / "metadata.json").read_text())
        pid, timing = meta["environment"]["pid"], meta["timing"]
        ready = (timing["function_started_at"], timing["function_started_at"] + timing["import_s"])
        first_start[pid] = min(first_start.get(pid, ready), ready)
        spans.setdefault(pid, []).append(
            (timing["function_started_at"], timing["function_started_at"] + t["duration_s"])
        )
    worker_start = sorted(ready - record["fit_started_at"] for _, ready in first_start.values())[:SLOTS]
    # Where the slots' time went besides the trials themselves (summed over worker processes)
    fit_end = record["fit_started_at"] + record["wall_s"]
    last_end = max(end for s in spans.values() for _, end in s)
    gaps = sum(b[0] - a[1] for s in spans.values() for a, b in zip(sorted(s), sorted(s)[1:]))
    timeline = {
        "gaps_between_trials_s": gaps,
        "tail_idle_s": sum(last_end - max(end for _, end in s) for s in spans.values()),
        "teardown_s": fit_end - last_end,
        "import_s": sum(ready - start for start, ready in first_start.values()) / len(first_start),
    }
    return {
        "makespan_s": record["wall_s"],
        "work_s": float(work),
        "ray_start_s": ray_start,
        "cli_total_s": total,
        "trial_functions_s": in_trials,
        "worker_start_s": sum(worker_start) / len(worker_start),
        "workers": len(first_start),
        "timeline": timeline,
    }


TUNE_DEFAULTS = """
import json, sys, time
import ray
from ray import tune
from trainables import lstm_mae_pretrain as mae
from trainables.runtime.session import TuneSession
config, epochs, trials, storage = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

def fn(cfg):
    mae.train(dict(config, epochs=epochs, seed=cfg["seed"]), TuneSession(checkpoint_every=1))

t0 = time.perf_counter()
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
ray_start = time.perf_counter() - t0
tuner = tune.Tuner(tune.with_resources(fn, {"cpu": 1}), param_space={"seed": tune.grid_search(list(range(trials)))},
                   run_config=tune.RunConfig(storage_path=storage, name="plain", verbose=0))
t1 = time.perf_counter()
grid = tuner.fit()
wall = time.perf_counter() - t1
work = sum(r.metrics_dataframe["epoch_time_s"].sum() for r in grid)
print("RESULT", json.dumps({"makespan_s": wall, "work_s": float(work), "ray_start_s": ray_start}))
"""


def run_tune_defaults(trials: int, epochs: int, folder: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-c", TUNE_DEFAULTS, json.dumps(CONFIG), str(epochs), str(trials), str(folder / "plain")],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder,
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        raise RuntimeError(proc.stdout[-3000:] + proc.stderr[-3000:])
    return json.loads(line[0][len("RESULT ") :])


def summarise(name: str, r: dict, trials: int, slots: int) -> dict:
    ideal = r["work_s"] / slots
    r = dict(
        r,
        ideal_s=ideal,
        efficiency=ideal / r["makespan_s"],
        overhead_per_trial_s=(r["makespan_s"] * slots - r["work_s"]) / trials,
    )
    ray = f"  (+ Ray start {r['ray_start_s']:.1f} s)" if "ray_start_s" in r else ""
    if "trial_functions_s" in r:  # where the overhead is: inside trial functions, or between them
        r["efficiency_excl_worker_start"] = ideal / (r["makespan_s"] - r["worker_start_s"])
        ray += (
            f"\n{'':<14}inside trials {(r['trial_functions_s'] - r['work_s']) / trials:.2f} s/trial, "
            f"between {(r['makespan_s'] * slots - r['trial_functions_s']) / trials:.2f} s/trial; "
            f"trial workers start in {r['worker_start_s']:.1f} s ({r['workers']} workers): efficiency "
            f"without that start-up {r['efficiency_excl_worker_start']:.3f}"
        )
        tl = r["timeline"]
        ray += (
            f"\n{'':<14}of which the trainable's imports {tl['import_s']:.1f} s; slots idle between trials "
            f"{tl['gaps_between_trials_s']:.1f} s, at the end {tl['tail_idle_s']:.1f} s (the last trial alone); "
            f"Tune's teardown {tl['teardown_s']:.1f} s"
        )
    print(
        f"{name:<14}{r['makespan_s']:9.1f} s {ideal:8.1f} s {r['efficiency']:8.3f} "
        f"{r['overhead_per_trial_s']:10.2f} s{ray}"
    )
    return r


TWO_STAGE = """\
name: two
storage: {storage}
defaults: {{seeds: [0], resources: {{cpu: 1}}, max_failures: 0}}
stages:
  A:
    trainable: lstm_mae_pretrain
    config: {{{config}}}
    variants: {variants}
  B:
    needs: [A]
    trainable: lstm_classifier_finetune
    config: {{data: "{labeled}", window_length: 105, hidden_size: 32, num_heads: 2, folds: 2,
             epochs: {b_epochs}, encoder: "${{A.all.checkpoint}}"}}
"""

PER_STAGE = """
import sys
from orchestrator.execution import study_runner
study_runner._legacy_experiments = lambda store, todo: True  # one Tuner per stage, stage after stage
from orchestrator.cli import app
sys.argv = ["orchestrator", *sys.argv[1:]]
app()
"""


def calibrate_fine(work_s: float, labeled: str) -> int:
    """Epochs of the fine-tuning trial (2 folds) for about `work_s` seconds on one thread."""
    import torch

    from trainables import lstm_classifier_finetune as fine
    from trainables.runtime.session import LocalSession

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cfg = {"data": labeled, "window_length": 105, "hidden_size": 32, "num_heads": 2, "folds": 2, "epochs": 4}
        fine.train(cfg, LocalSession(tmp))
        per_epoch = (time.perf_counter() - t0) / 4
    return max(1, round(work_s / per_epoch))


def _labeled_data(folder: Path) -> Path:
    """200 labeled windows for stage B, as a Parquet file."""
    import pyarrow.parquet as pq

    from trainables.data import synthetic_ohlc as synthetic
    from trainables.data.ohlc import windows_table

    data = synthetic.generate(200, 105, seed=1)
    labeled = folder / "labeled.parquet"
    extra = {k: data[k] for k in ("label", "expansion_start", "expansion_end")}
    pq.write_table(windows_table(data["ohlc"], list(data["window_id"]), **extra), labeled)
    return labeled


def run_two_stage(epochs: tuple[int, int], folder: Path, per_stage: bool, figure: Path | None = None) -> dict:
    """The two-stage study in its own folder (`epochs`: of the base A trial and of a B trial, the
    same for both ways of running it); makespan, work and ideal from the records."""
    labeled = _labeled_data(folder)
    e, b_epochs = epochs
    config = ", ".join(f"{k}: {json.dumps(v) if v is not None else 'null'}" for k, v in CONFIG.items() if k != "epochs")
    # 8 trials of A: three of 1x, three of 2x, two of 3x the base work (distinct mask ratios)
    lengths = [1, 1, 1, 2, 2, 2, 3, 3]
    variants = ", ".join(f"a{i}: {{epochs: {k * e}, mask_ratio: {0.15 + 0.01 * i:.2f}}}" for i, k in enumerate(lengths))
    study = folder / "two.yaml"
    study.write_text(
        TWO_STAGE.format(
            storage=folder / "runs",
            config=config,
            variants="{" + variants + "}",
            labeled=labeled,
            b_epochs=b_epochs,
        )
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-c", PER_STAGE] if per_stage else [sys.executable, "-m", "orchestrator"]
    proc = subprocess.run(
        [*command, "run", str(study), "--num-cpus", str(SLOTS)], capture_output=True, text=True, env=env, cwd=folder
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout[-3000:] + proc.stderr[-3000:])
    root = folder / "runs" / "two"
    records = {s: json.loads((root / "_orchestrator" / "stages" / f"{s}.json").read_text()) for s in ("A", "B")}
    start = min(r["fit_started_at"] for r in records.values())
    attempts = [a for r in records.values() for t in r["trials"].values() for a in t.get("attempts", [])]
    first, end = min(a[0] for a in attempts), max(a[1] for a in attempts)
    work = {s: {t["trial_id"]: t["duration_s"] for t in r["trials"].values()} for s, r in records.items()}
    chains = [work["A"][t["upstream"]["A.all"]["trial_id"]] + t["duration_s"] for t in records["B"]["trials"].values()]
    total = sum(work["A"].values()) + sum(work["B"].values())
    ideal = max(total / SLOTS, max(chains))
    if figure is not None:  # the report's timeline of this run
        from orchestrator.analysis import timeline

        figure.write_bytes(timeline.draw(records, ["A", "B"]))
    return {
        "makespan_s": end - start,
        "work_s": total,
        "critical_path_s": max(chains),
        "ideal_s": ideal,
        "ratio_to_ideal": (end - start) / ideal,
        # the experiment's start until its first trial started: the trial workers' start-up
        "worker_start_s": first - start,
        "ratio_to_ideal_excl_worker_start": (end - first) / ideal,
        "trials": {s: len(r["trials"]) for s, r in records.items()},
        "work_by_stage_s": {s: sum(w.values()) for s, w in work.items()},
    }


def two_stage(args) -> None:
    out = {"work_s_target": args.work_s}
    with tempfile.TemporaryDirectory() as tmp:  # calibrated once: both ways run the same epochs
        CONFIG["data"] = write_data(Path(tmp))
        labeled = _labeled_data(Path(tmp))
        epochs = (calibrate(args.work_s), calibrate_fine(args.work_s, str(labeled)))
    out["epochs"] = {"A base": epochs[0], "B": epochs[1]}
    for name, per_stage in (("one schedule", False), ("stage after stage", True)):
        figure = args.figures / f"timeline_{'per_stage' if per_stage else 'one_schedule'}.png" if args.figures else None
        if figure is not None:
            figure.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            CONFIG["data"] = write_data(folder)
            r = run_two_stage(epochs, folder, per_stage, figure)
        out[name] = r
        print(
            f"{name:<18} makespan {r['makespan_s']:6.1f} s, ideal {r['ideal_s']:6.1f} s (work {r['work_s']:.1f} s / "
            f"{SLOTS} slots, critical path {r['critical_path_s']:.1f} s): makespan / ideal {r['ratio_to_ideal']:.3f}"
            f"\n{'':<19}workers start in {r['worker_start_s']:.1f} s; from the first trial's start "
            f"{r['ratio_to_ideal_excl_worker_start']:.3f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--work-s", type=float, default=3.0)
    parser.add_argument("--skip", nargs="*", default=[], choices=["sequential", "orchestrator", "tune-defaults"])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--two-stage", action="store_true", help="A -> B fan-out: one schedule vs stage after stage")
    parser.add_argument("--figures", type=Path, help="--two-stage: write each run's timeline PNG here")
    args = parser.parse_args()
    if args.two_stage:
        two_stage(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        CONFIG["data"] = write_data(folder)
        epochs = calibrate(args.work_s)
        print(f"{args.trials} trials x ~{args.work_s:g} s ({epochs} epochs each) on {SLOTS} CPU slots")
        print(f"{'':<14}{'makespan':>11}{'ideal':>10}{'effic.':>9}{'overhead/trial':>16}")
        out = {"trials": args.trials, "work_s_target": args.work_s, "epochs": epochs}
        if "sequential" not in args.skip:
            out["sequential"] = summarise("sequential", run_sequential(args.trials, epochs), args.trials, 1)
        if "orchestrator" not in args.skip:
            out["orchestrator"] = summarise(
                "orchestrator", run_orchestrator(args.trials, epochs, folder), args.trials, SLOTS
            )
        if "tune-defaults" not in args.skip:
            out["tune_defaults"] = summarise(
                "tune-defaults", run_tune_defaults(args.trials, epochs, folder), args.trials, SLOTS
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
