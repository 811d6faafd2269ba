"""Epoch time of `multitask_span` at the seed's size (210 windows, batch 32), with and without
diagnostics, side by side.

    python bench/multitask_span_epoch.py [--epochs 12] [--rounds 3] [--crf] [--json out.json]

Two arms run interleaved over rounds (the machine is shared and noisy), each a full trial of
`--epochs` epochs through `multitask_span.train` with a LocalSession:
- full: every diagnostic on at every epoch (feature stats, gradient stats, a periodic
  `checkpoint_epoch_N.pt` each epoch, all CSVs and the log), plus a Tune-style state
  checkpoint every epoch;
- lean: the same training with feature/gradient stats and periodic checkpoints as rare as
  the settings allow (the per-epoch CSV rows stay: they are the trial's record).
- bare: the limit: the same model's forward + losses + backward + AdamW step over the same
  168 training windows in batches of 32, and one validation forward, nothing else.
Epoch time is the wall time between consecutive reports (everything the trial does in an
epoch), median over epochs 2..N (epoch 1 pays warm-up) and over rounds. The diagnostics share
is 1 - lean / full, and also the in-trial `diagnostics_time_s` / epoch time.
Targets (issue #4): full epoch <= 0.2 s on this CPU; diagnostics <= 20% of the epoch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainables import multitask_span  # noqa: E402
from trainables.runtime.session import LocalSession  # noqa: E402


class TimedSession(LocalSession):
    def __init__(self, root, every):
        super().__init__(root, checkpoint_every=every, keep=2)
        self.stamps: list[float] = []

    def report(self, metrics, checkpoint_dir=None):
        super().report(metrics, checkpoint_dir)
        self.stamps.append(time.perf_counter())


def run(epochs: int, full: bool, crf: bool) -> dict:
    cfg = {
        "data": "synthetic:ohlc?n=210&labeled=1&seed=7",
        "val_fraction": 0.2,
        "epochs": epochs,
        "batch_size": 32,
        "lr": 1e-3,
        "seed": 42,
        "use_crf": crf,
        "plots": False,
        "device": "cpu",
        "gradient_stats_interval": 1 if full else 10_000,
        "checkpoint_epoch_interval": 1 if full else None,
    }
    with tempfile.TemporaryDirectory() as tmp:
        session = TimedSession(tmp, every=1 if full else 10_000)
        multitask_span.train(cfg, session)
        walls = [b - a for a, b in zip(session.stamps, session.stamps[1:])]
        m = session.metrics[1:]
        return {
            "epoch_s": statistics.median(walls),
            "diag_share_in_trial": statistics.median(r["diagnostics_time_s"] / w for r, w in zip(m, walls)),
        }


def bare(epochs: int, crf: bool) -> float:
    import torch

    from trainables.configs.multitask_span import Config
    from trainables.data.span_targets import Batch
    from trainables.losses.span import task_losses
    from trainables.runtime.reproducibility import limit_threads

    limit_threads()
    torch.manual_seed(0)
    cfg = Config(data="bare", use_crf=crf)
    model, weighting, opt = multitask_span.build(cfg, 2, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    starts = torch.randint(20, 50, (210,), generator=gen)
    data = Batch(
        torch.randn(210, 105, 12, generator=gen), torch.randint(0, 2, (210,), generator=gen), starts, starts + 20, cfg
    )
    train, val = data.take(torch.arange(168)), data.take(torch.arange(168, 210))
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for i in range(0, 168, 32):
            b = train.take(torch.arange(i, min(i + 32, 168)))
            loss = weighting(task_losses(model, model(b.x), b, cfg))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            model(val.x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--crf", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    full, lean, floor = [], [], []
    for _ in range(args.rounds):
        full.append(run(args.epochs, True, args.crf))
        lean.append(run(args.epochs, False, args.crf))
        floor.append(bare(args.epochs, args.crf))
    f = statistics.median(r["epoch_s"] for r in full)
    lo = statistics.median(r["epoch_s"] for r in lean)
    b = statistics.median(floor)
    result = {
        "windows": 210,
        "batch_size": 32,
        "crf": args.crf,
        "epochs": args.epochs,
        "rounds": args.rounds,
        "full_epoch_s": f,
        "lean_epoch_s": lo,
        "bare_epoch_s": b,
        "full_over_bare": f / b,
        "diagnostics_share": 1 - lo / f,
        "diagnostics_share_in_trial": statistics.median(r["diag_share_in_trial"] for r in full),
    }
    print(f"multitask_span, 210 windows (168 train / 42 val), batch 32, CRF {'on' if args.crf else 'off'}")
    print(f"  epoch, all diagnostics every epoch : {f:.3f} s   (target <= 0.200)")
    print(f"  epoch, lean diagnostics            : {lo:.3f} s")
    print(f"  bare model epoch (the floor)       : {b:.3f} s   (full / bare = {f / b:.2f})")
    print(f"  diagnostics share (1 - lean/full)  : {result['diagnostics_share']:.1%}   (target <= 20%)")
    print(f"  diagnostics share (in-trial timer) : {result['diagnostics_share_in_trial']:.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
