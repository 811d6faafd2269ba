"""Pretraining throughput: our training step vs a per-sample reference vs the bare model.

    python bench/pretrain_throughput.py [--batches 8] [--rounds 3] [--device auto] [--json out.json]

All three run the same BiLSTM masked autoencoder (hidden 128 per direction, T = 105, batch 256)
side by side, interleaved over rounds so that a noisy shared machine affects them alike:
- ours: `lstm_mae_pretrain.train_step` on windows already on the device (vectorised time warp,
  scaling, jitter and masking; forward, backward, clip, AdamW);
- reference: a per-sample `Dataset` + `DataLoader` doing numpy augmentation per window with a
  scipy CubicSpline time warp and per-window masking, then the same step on the model;
- bare: forward + backward + step on pre-built, pre-masked tensors: the limit.
Reports samples/s (median over rounds) and the ratios ours/bare and ours/reference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.interpolate import CubicSpline
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainables import lstm_mae_pretrain as mae  # noqa: E402
from trainables.configs.lstm_mae_pretrain import Config  # noqa: E402
from trainables.data import masking
from trainables.data import synthetic_ohlc as synthetic  # noqa: E402
from trainables.data.ohlc import normalise  # noqa: E402
from trainables.runtime.reproducibility import pick_device  # noqa: E402

T, BATCH, HIDDEN = 105, 256, 128


class PerSampleDataset(Dataset):
    """The straightforward way: augment and mask one window at a time in numpy."""

    def __init__(self, windows: np.ndarray, cfg: Config, seed: int = 0):
        self.x, self.cfg = windows, cfg
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        x, cfg, rng = self.x[i], self.cfg, self.rng
        knots = np.linspace(0, T - 1, 6)
        speed = CubicSpline(knots, np.clip(rng.normal(1, cfg.time_warp_sigma, 6), 0.1, None))(np.arange(T))
        clock = np.cumsum(np.clip(speed, 0.05, None))
        clock = (clock - clock[0]) / (clock[-1] - clock[0]) * (T - 1)
        x = np.stack([np.interp(clock, np.arange(T), x[:, c]) for c in range(4)], axis=1)
        x = x * max(rng.normal(1, cfg.scaling_sigma), 0.1)
        x = x + rng.normal(0, cfg.jitter_sigma, x.shape)
        x[:, 1] = np.maximum.reduce([x[:, 0], x[:, 1], x[:, 3]])
        x[:, 2] = np.minimum.reduce([x[:, 0], x[:, 2], x[:, 3]])
        n_patches = -(-T // cfg.patch_len)
        k = int(cfg.mask_ratio * n_patches + rng.random())
        hidden = np.zeros(n_patches, bool)
        hidden[rng.permutation(n_patches)[:k]] = True
        mask = np.repeat(hidden, cfg.patch_len)[:T, None].repeat(4, axis=1)
        return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(mask)


def _model(cfg, device):
    torch.manual_seed(0)
    model, opt, _ = mae.build(cfg, device)
    return model, opt


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_ours(data, cfg, device, batches):
    model, opt = _model(cfg, device)
    mae.train_step(model, opt, data[:BATCH], cfg, None, augmented=True)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(batches):
        idx = torch.randint(0, len(data), (BATCH,), device=device)
        mae.train_step(model, opt, data[idx], cfg, None, augmented=True)
    _sync(device)
    return batches * BATCH / (time.perf_counter() - t0)


def run_reference(windows_np, cfg, device, batches):
    model, opt = _model(cfg, device)
    loader = DataLoader(PerSampleDataset(windows_np, cfg), batch_size=BATCH, shuffle=True, num_workers=0)
    it = iter(loader)
    t0 = None
    for b in range(batches + 1):
        if b == 1:  # first batch is warm-up
            _sync(device)
            t0 = time.perf_counter()
        try:
            x, mask = next(it)
        except StopIteration:
            it = iter(loader)
            x, mask = next(it)
        _step(model, opt, x.to(device), mask.to(device), cfg)
    _sync(device)
    return batches * BATCH / (time.perf_counter() - t0)


def run_bare(data, cfg, device, batches):
    model, opt = _model(cfg, device)
    x = data[:BATCH].clone()
    mask = masking.make_mask("patch", tuple(x.shape), cfg.mask_ratio, device)
    for b in range(batches + 1):
        if b == 1:
            _sync(device)
            t0 = time.perf_counter()
        _step(model, opt, x, mask, cfg)
    _sync(device)
    return batches * BATCH / (time.perf_counter() - t0)


def _step(model, opt, x, mask, cfg) -> None:
    """Forward, masked loss, backward, clip, AdamW: the step shared by reference and bare."""
    loss = masking.masked_mse(model(x, mask), x, mask)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--windows", type=int, default=4096)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = pick_device(args.device)
    cfg = Config(data="synthetic:ohlc", hidden_size=HIDDEN, batch_size=BATCH, mask_strategy="patch")
    windows_np = normalise(synthetic.generate(args.windows, T, seed=0)["ohlc"]).astype(np.float32)
    data = torch.as_tensor(windows_np, device=device)
    results = {"ours": [], "reference": [], "bare": []}
    for _ in range(args.rounds):
        results["bare"].append(run_bare(data, cfg, device, args.batches))
        results["ours"].append(run_ours(data, cfg, device, args.batches))
        results["reference"].append(run_reference(windows_np, cfg, device, args.batches))
    med = {k: statistics.median(v) for k, v in results.items()}
    summary = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "config": {"hidden": HIDDEN, "T": T, "batch": BATCH, "batches": args.batches, "rounds": args.rounds},
        "samples_per_s": med,
        "all_rounds": results,
        "ours_vs_bare": med["ours"] / med["bare"],
        "ours_vs_reference": med["ours"] / med["reference"],
    }
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"BiLSTM-{HIDDEN}, T={T}, batch {BATCH}, {args.batches} batches x {args.rounds} rounds"
    )
    print(f"{'method':<12}{'samples/s (median)':>20}{'rounds':>30}")
    for k in ("bare", "ours", "reference"):
        print(f"{k:<12}{med[k]:>20.0f}{'  '.join(f'{v:.0f}' for v in results[k]):>30}")
    print(f"ours / bare      = {summary['ours_vs_bare']:.3f}   (target >= 0.92)")
    print(f"ours / reference = {summary['ours_vs_reference']:.3f}   (target > 1)")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
