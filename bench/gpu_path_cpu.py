"""The GPU-path changes measured on the CPU, before and after, side by side (issue 18).

    python bench/gpu_path_cpu.py [--before c815370] [--rounds 3] [--json bench/results/gpu_path_cpu.json]

- CRF decoding: pytorch-crf's `decode` (what `SpanModel.decode` called before: a Python
  backtrack per window, then a tensor of the lists) vs `trainables/models/crf.viterbi_decode`,
  on random emissions of the seed's validation block (42 windows x 105 bars) and of 512 windows.
- Whole trainables, before vs after: `--before` (a commit, checked out in a temporary git
  worktree) and this working tree run the same short trials in separate processes, alternating
  within each round: `multitask_span` epoch time (the seed's size: 210 windows of 105 bars,
  batch 32, without and with the CRF; median of epochs 2-6) and `contrastive_isotropy`
  training throughput (offline MiniLM, batch 16, 10 steps, SIGReg and the covariance penalty
  on). On a CPU none of this is a speed-up target (no host synchronisation costs anything
  here): the target is no regression.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TRIALS = r"""
import json, os, sys, tempfile
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
from trainables import contrastive_isotropy as ci, multitask_span as mt
from trainables.runtime.session import LocalSession
out = {}
for crf in (False, True):
    s = LocalSession(tempfile.mkdtemp())
    mt.train({"data": "synthetic:ohlc?n=210&length=105&labeled=1&seed=0", "epochs": 6, "batch_size": 32,
              "use_crf": crf, "plots": False, "test_fraction": 0.0, "seed": 0}, s)
    out["multitask_epoch_s" + ("_crf" if crf else "")] = sorted(m["epoch_time_s"] for m in s.metrics[1:])[2]
s = LocalSession(tempfile.mkdtemp())
ci.train({"train_data": "synthetic:triples?n=400&seed=0", "batch_size": 16, "max_steps": 10, "warmup_steps": 1,
          "eval_every_steps": 5, "lambda_isotropy": 1.0, "lambda_reg": 0.1, "output_dim": 512,
          "max_seq_length": 32, "seed": 0}, s)
out["contrastive_samples_per_s"] = s.metrics[-1]["samples_per_s"]
print("RESULT " + json.dumps(out))
"""


def decode_times(n: int, rounds: int) -> tuple[float, float]:
    import torch
    from torchcrf import CRF

    from trainables.models.crf import viterbi_decode

    g = torch.Generator().manual_seed(n)
    crf = CRF(2, batch_first=True)
    emissions = torch.randn(n, 105, 2, generator=g)
    mask = torch.ones(n, 105, dtype=torch.bool)
    theirs, ours = [], []
    for _ in range(rounds * 3):
        t0 = time.perf_counter()
        torch.tensor(crf.decode(emissions, mask=mask), dtype=torch.bool)
        theirs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        viterbi_decode(crf, emissions).bool()
        ours.append(time.perf_counter() - t0)
    return statistics.median(theirs), statistics.median(ours)


def span_pass_ab(before: str, rounds: int) -> tuple[float, float]:
    """The span trainable's training pass (no CRF), old and new alternating in this process:
    `_train_pass` of `before` executed in the current module's namespace, on the same model and
    data (separate processes differ by more than this change: see bench/README.md)."""
    import torch

    from trainables import multitask_span as mt
    from trainables.configs.multitask_span import Config
    from trainables.runtime.early_stopping import EarlyStopping

    source = subprocess.run(
        ["git", "show", f"{before}:trainables/multitask_span.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    namespace = dict(vars(mt))
    exec(source[source.index("def _train_pass(") : source.index("def _write_diagnostics(")], namespace)  # noqa: S102
    cfg = Config(data="synthetic:ohlc?n=210&length=105&labeled=1&seed=0", batch_size=32, plots=False, test_fraction=0)
    data = mt.load_data(cfg, torch.device("cpu"))
    model, weighting, opt = mt.build(cfg, len(data.classes), torch.device("cpu"))
    state = mt.TrainState(model, weighting, opt, EarlyStopping(None), None)
    times: dict[str, list[float]] = {"old": [], "new": []}
    arms = [("old", namespace["_train_pass"]), ("new", mt._train_pass)]
    for r in range(2 + rounds * 4):
        for name, fn in arms if r % 2 else arms[::-1]:
            t0 = time.perf_counter()
            fn(state, data.train, cfg, False)
            times[name].append(time.perf_counter() - t0)
    return statistics.median(times["old"][2:]), statistics.median(times["new"][2:])


def run_trials(tree: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run(
        [sys.executable, "-c", TRIALS], cwd=tree, env=env, capture_output=True, text=True, timeout=1800
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"trials in {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", default="c815370", help="the commit to compare with")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(2)
    decode = {n: decode_times(n, args.rounds) for n in (42, 512)}
    print("CRF decode, 105 bars, CPU (median ms):")
    for n, (theirs, ours) in decode.items():
        print(f"  {n:4d} windows: pytorch-crf {theirs * 1e3:8.1f}   batched {ours * 1e3:6.1f}   x{theirs / ours:.1f}")

    old, new = span_pass_ab(args.before, args.rounds)
    print(f"span training pass, in-process A/B: before {old:.3f} s, after {new:.3f} s, speed x{old / new:.2f}")

    before_tree = Path(tempfile.mkdtemp(prefix="before-"))
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(before_tree), args.before], cwd=ROOT, check=True, capture_output=True
    )
    rows: dict[str, list[dict]] = {"before": [], "after": []}
    try:
        for r in range(args.rounds):
            for arm, tree in (
                (("before", before_tree), ("after", ROOT)) if r % 2 == 0 else (("after", ROOT), ("before", before_tree))
            ):
                rows[arm].append(run_trials(tree))
                print(f"  round {r + 1} {arm}: {rows[arm][-1]}", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(before_tree)], cwd=ROOT, check=False)
    summary = {arm: {k: statistics.median(x[k] for x in runs) for k in runs[0]} for arm, runs in rows.items()}
    print(f"trainables, before ({args.before}) vs after, CPU, medians of {args.rounds} rounds:")
    for key in summary["after"]:
        b, a = summary["before"][key], summary["after"][key]
        better = a / b if "per_s" in key else b / a  # samples/s: higher is better; seconds: lower
        print(f"  {key:28s} before {b:8.3f}   after {a:8.3f}   after/before speed x{better:.2f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "decode_s": {str(n): {"pytorch_crf": t, "batched": o} for n, (t, o) in decode.items()},
                    "before": args.before,
                    "rounds": rows,
                    "median": summary,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
