"""Does a study give the same answers on an idle and on a loaded machine? (issue 16)

    python bench/selection_under_load.py [--json bench/results/selection_under_load.json]

One small study with sub-second epochs (4 pretraining trials: 2 mask strategies x 2 seeds, 12
epochs of 240 synthetic windows, select on val/masked_mse; then a fine-tuning stage from
`${pretrain.best.checkpoint}`) runs twice through the real CLI on a local Ray with 2 CPUs:
once on an idle machine and once beside a CPU burner (2 busy-looping processes, one per core).
Trials hold back reports closer than 1 s (`report_interval_s`), so how many epochs reach Tune
depends on how fast the epochs run. Compared: the best trial of each stage, every trial's
`best.*` value and best epoch, the checkpoint each reference resolved to (its epoch), and the
fine-tuning results. Also counted, per run: how many trials' best value *as Tune saw it*
(the minimum over Tune's progress.csv, what the driver used before) differs from the minimum
over the trial's own metrics.csv: 0 for the select metric, because every improving epoch is
now checkpointed and a report with a checkpoint always goes out; and the same count for
val/loss, which is not selected on, to show that Tune still misses epochs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]

STUDY = textwrap.dedent("""\
    name: load
    storage: {storage}
    defaults: {{seeds: [1, 2], resources: {{cpu: 1}}}}
    stages:
      pretrain:
        trainable: lstm_mae_pretrain
        config: {{data: "synthetic:ohlc?n=240&length=60&seed=0", window_length: 60, epochs: 12, hidden_size: 16,
                 batch_size: 32, aug_multiplier: 1, patch_len: 6, lr: 3.0e-3, early_stopping_patience: null}}
        variants: {{random: {{mask_strategy: random}}, block: {{mask_strategy: block}}}}
        select: {{metric: val/masked_mse, mode: min}}
      finetune:
        needs: [pretrain]
        trainable: lstm_classifier_finetune
        config: {{data: "synthetic:ohlc?n=90&length=60&seed=1&labeled=1", window_length: 60, folds: 3, epochs: 4,
                 hidden_size: "${{pretrain.best.config.hidden_size}}", num_heads: 2,
                 encoder: "${{pretrain.best.checkpoint}}"}}
        select: {{metric: oof/balanced_accuracy, mode: max}}
""")


def _burn(stop) -> None:
    x = 0
    while not stop.is_set():
        x = (x * 1103515245 + 12345) % 2**31


def run(folder: Path, burners: int) -> dict:
    folder.mkdir(parents=True)
    study = folder / "study.yaml"
    study.write_text(STUDY.format(storage=folder / "runs"))
    stop = mp.Event()
    procs = [mp.Process(target=_burn, args=(stop,), daemon=True) for _ in range(burners)]
    for p in procs:
        p.start()
    started = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", str(study), "--num-cpus", "2"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    wall = time.perf_counter() - started
    stop.set()
    for p in procs:
        p.join()
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    root = folder / "runs" / "load"
    df = pd.read_parquet(root / "results.parquet")
    trials, tune_differs, other_differs, reached = {}, 0, 0, []
    for _, row in df[df.stage == "pretrain"].iterrows():
        own = pd.read_csv(Path(row["path"]) / "metrics.csv")
        seen = pd.read_csv(Path(row["path"]) / "progress.csv")
        reached.append(len(seen))
        tune_differs += int(seen["val/masked_mse"].min() != own["val/masked_mse"].min())
        # val/loss is not the select metric, so its improvements are not checkpointed and their
        # reports can be held back: what the driver's old "best over what Tune saw" would give
        other_differs += int(seen["val/loss"].min() != own["val/loss"].min())
        epoch = int(torch.load(Path(row["checkpoint"]) / "state.pt", weights_only=True)["epoch"])
        trials[row["trial"]] = {
            "best": float(row["best.val/masked_mse"]),
            "best_checkpoint_epoch": epoch,
            "own_min": float(own["val/masked_mse"].min()),
        }
    fine = df[df.stage == "finetune"].sort_values("trial")
    best = df[df.stage == "pretrain"].sort_values(["best.val/masked_mse", "trial"]).iloc[0]["trial"]
    return {
        "wall_s": wall,
        "burners": burners,
        "pretrain": trials,
        "best_pretrain_trial": best,
        "encoder_used": sorted(set(fine["upstream.pretrain.trial"])),
        "finetune_oof": dict(zip(fine["trial"], fine["best.oof/balanced_accuracy"].round(12))),
        "epochs_reaching_tune": reached,
        "trials_where_tune_best_differs": tune_differs,
        "trials_where_tune_min_val_loss_differs": other_differs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        idle = run(Path(tmp) / "idle", 0)
        loaded = run(Path(tmp) / "loaded", os.cpu_count() or 2)
    same = {k: idle[k] == loaded[k] for k in ("pretrain", "best_pretrain_trial", "encoder_used", "finetune_oof")}
    out = {"idle": idle, "loaded": loaded, "identical": same}
    for name, r in (("idle", idle), ("loaded", loaded)):
        print(
            f"{name:7s} wall {r['wall_s']:.1f} s; epochs reaching Tune per trial {r['epochs_reaching_tune']} of 12; "
            f"Tune's min differs from the trial's own: select metric {r['trials_where_tune_best_differs']}/4, "
            f"val/loss {r['trials_where_tune_min_val_loss_differs']}/4; "
            f"best trial {r['best_pretrain_trial']}"
        )
    print("identical between runs:", same)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
    if not all(same.values()):
        raise SystemExit("the answers differ between the idle and the loaded run")


if __name__ == "__main__":
    main()
