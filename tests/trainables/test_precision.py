"""Mixed precision: autocast on CUDA only; on the CPU the setting is recorded as ignored and
changes nothing (the same losses as without it)."""

from __future__ import annotations

import json

import torch

from trainables import lstm_mae_pretrain as mae
from trainables.runtime import precision
from trainables.runtime.session import LocalSession


def test_autocast_only_on_cuda():
    assert not precision.enabled(torch.device("cpu"), "bf16")
    assert precision.enabled(torch.device("cuda", 0), "bf16")
    assert not precision.enabled(torch.device("cuda", 0), "no")
    assert precision.describe(torch.device("cpu"), "bf16") == "bf16 ignored: not on CUDA"
    assert precision.describe(torch.device("cuda", 0), "bf16") == "bf16"
    assert precision.describe(torch.device("cpu"), "no") == "no"
    with precision.autocast(torch.device("cpu"), "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_bf16_on_cpu_trains_as_float32_and_says_so(tmp_path):
    cfg = {
        "data": "synthetic:ohlc?n=200&length=40&seed=0",
        "window_length": 40,
        "hidden_size": 8,
        "batch_size": 32,
        "patch_len": 10,
        "epochs": 2,
        "aug_multiplier": 0,
    }
    plain, bf16 = LocalSession(tmp_path / "a"), LocalSession(tmp_path / "b")
    mae.train(cfg, plain)
    mae.train({**cfg, "mixed_precision": "bf16"}, bf16)
    assert [m["train/loss"] for m in plain.metrics] == [m["train/loss"] for m in bf16.metrics]
    meta = json.loads((tmp_path / "b" / "metadata.json").read_text())
    assert meta["mixed_precision"] == "bf16 ignored: not on CUDA"
