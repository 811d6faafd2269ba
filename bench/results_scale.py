"""Scale of the bookkeeping: `plan` of a 1,000-trial matrix and `results` of 1,000 trials x 100 epochs.

    python bench/results_scale.py [--trials 1000] [--epochs 100] [--json out.json]

Writes a synthetic study folder (stage records, per-trial metrics.csv: what a run leaves) and
times, each in a fresh process as a user would run them:
- `plan` on a study file of 1,000 trials (10 variants x 10 grid values x 10 seeds), and the
  peak memory (max RSS) of that process;
- `results` (trial table, seed aggregates, Markdown) and `report` (plus learning-curve PNGs from
  100,000 metric rows).
Targets (issue 8/9): plan < 2 s, results < 10 s, plan's driver memory < 1 GiB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def write_study_file(folder: Path) -> Path:
    variants = "\n".join(f"      v{i}: {{mask_ratio: {0.10 + 0.01 * i:.2f}}}" for i in range(10))
    path = folder / "big.yaml"
    path.write_text(f"""name: big
storage: {folder / "runs"}
defaults: {{seeds: [{", ".join(str(s) for s in range(10))}]}}
stages:
  pretrain:
    trainable: lstm_mae_pretrain
    expected_trial_minutes: 3
    config: {{data: "synthetic:ohlc?n=100&length=40&seed=0", window_length: 40, patch_len: 8}}
    variants:
{variants}
    grid: {{lr: [{", ".join(f"{x:.1e}" for x in np.geomspace(1e-4, 1e-2, 10))}]}}
    select: {{metric: val/loss, mode: min}}
""")
    return path


def write_fake_run(folder: Path, trials: int, epochs: int) -> Path:
    root = folder / "runs" / "big"
    rng = np.random.default_rng(0)
    record = {
        "stage": "pretrain",
        "trainable": "lstm_mae_pretrain",
        "state": "complete",
        "select": {"metric": "val/loss", "mode": "min"},
        "resources": {"cpu": 1, "gpu": 0.25},
        "compare": {"baseline": "v0"},
        "trials": {},
    }
    for i in range(trials):
        tid = f"{i:012x}"
        variant, seed, lr = f"v{i % 10}", (i // 10) % 10, float(10 ** -(2 + (i // 100) % 3))
        loss = np.exp(-np.arange(epochs) / 30) * (1 + 0.1 * rng.standard_normal(epochs)) + 0.01 * (i % 10)
        trial_dir = root / "pretrain" / tid
        trial_dir.mkdir(parents=True)
        pd.DataFrame(
            {
                "epoch": np.arange(1, epochs + 1),
                "train/loss": loss * 1.1,
                "val/loss": loss,
                "val/masked_mse": loss * 0.9,
            }
        ).to_csv(trial_dir / "metrics.csv", index=False)
        record["trials"][tid] = {
            "stage": "pretrain",
            "trial_id": tid,
            "name": f"pretrain/{variant}/lr={lr}/s{seed}",
            "variant": variant,
            "seed": seed,
            "status": "done",
            "config": {"mask_ratio": 0.1, "lr": lr},
            "grid": {"lr": lr},
            "iterations": epochs,
            "duration_s": 180.0,
            "gpu_s": 45.0,
            "cpu_s": 180.0,
            "best": float(loss.min()),
            "metrics": {
                "train/loss": float(loss[-1] * 1.1),
                "val/loss": float(loss[-1]),
                "val/masked_mse": float(loss[-1] * 0.9),
            },
            "checkpoint": str(trial_dir / "checkpoint_000099"),
            "path": str(trial_dir),
            "failures": 0,
        }
    (root / "_orchestrator" / "stages").mkdir(parents=True)
    (root / "_orchestrator" / "stages" / "pretrain.json").write_text(json.dumps(record))
    (root / "study.json").write_text(
        json.dumps({"name": "big", "spec_hash": "x", "stages": {"pretrain": []}, "runs": []})
    )
    return root


def timed(args: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of `python -m orchestrator ARGS` in a fresh process."""
    code = (
        "import resource, runpy, sys; sys.argv = ['orchestrator'] + sys.argv[1:];\n"
        "try:\n    runpy.run_module('orchestrator', run_name='__main__')\n"
        "except SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
        "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(code)"
    )
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    rss = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("MAXRSS")][0] / 1024
    return wall, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        study = write_study_file(folder)
        root = write_fake_run(folder, args.trials, args.epochs)
        out = {}
        out["plan_s"], out["plan_rss_mib"] = timed(["plan", str(study), "--json"], REPO)
        out["validate_s"], out["validate_rss_mib"] = timed(["validate", str(study)], REPO)
        out["results_s"], out["results_rss_mib"] = timed(["results", str(root), "-o", str(folder / "r.md")], REPO)
        out["report_s"], out["report_rss_mib"] = timed(["report", str(root)], REPO)
        out["import_only_s"], _ = timed(["--help"], REPO)
    out.update(trials=args.trials, epochs=args.epochs)
    print(
        f"{args.trials} trials x {args.epochs} epochs (each in a fresh process; includes Python start-up "
        f"and imports: `--help` alone takes {out['import_only_s']:.2f} s)"
    )
    for what, target in (("plan", 2.0), ("validate", None), ("results", 10.0), ("report", None)):
        extra = f"   target < {target:.0f} s" if target else ""
        print(f"  {what:<9}{out[what + '_s']:7.2f} s   peak RSS {out[what + '_rss_mib']:7.0f} MiB{extra}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
