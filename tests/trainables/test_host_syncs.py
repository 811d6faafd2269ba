"""No host synchronisation inside any trainable's training step.

On a GPU, reading a tensor's value on the host (`.item()`, `float(t)`, `bool(t)`, `.tolist()`,
indexing a list with a tensor) waits for every queued kernel: the CPU stops queueing the next
step while the GPU finishes this one. The counter patches those Tensor methods and records the
calls made from outside torch itself (our code, pytorch-crf, sentence-transformers: torch's
own optimizers read their step counters, which live on the CPU even for CUDA parameters), and
outside one check of transformers' attention masks (`MODEL_OWN` below).
Each test wraps one trainable's training step and runs a short trial: the step must not read
anything back; the per-epoch reads happen once, outside it. On a CUDA machine
`bench/gpu_check.py` checks the same with `torch.cuda.set_sync_debug_mode("error")`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys

import pytest
import torch

from trainables import contrastive_isotropy as ci
from trainables import lstm_classifier_finetune as clf
from trainables import lstm_mae_pretrain as mae
from trainables import multitask_span as mt
from trainables.runtime.session import LocalSession

os.environ.setdefault("HF_HUB_OFFLINE", "1")

READS = ("item", "__float__", "__int__", "__bool__", "__index__", "tolist", "numpy")
TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
# The one read we accept, in the base model's own forward: transformers checks whether a
# batch's padding mask is all ones (`padding_mask.all()`) to drop it and reach SDPA's flash
# kernel. It is part of the bare model's step too (bench/gpu_check.py compares against that).
MODEL_OWN = os.path.join("transformers", "masking_utils.py")


@contextlib.contextmanager
def host_reads():
    """Records (method, file, line) of every host read of a tensor made outside torch's own code."""
    seen: list[tuple[str, str, int]] = []
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def counting(name, original):
        @functools.wraps(original)
        def read(self, *args, **kwargs):
            caller = sys._getframe(1)
            where = caller.f_code.co_filename
            if not where.startswith(TORCH_DIR) and not where.endswith(MODEL_OWN):
                seen.append((name, where, caller.f_lineno))
            return original(self, *args, **kwargs)

        return read

    for name, original in originals.items():
        setattr(torch.Tensor, name, counting(name, original))
    try:
        yield seen
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


@pytest.fixture
def step_reads(monkeypatch):
    """Wraps `module.attribute` (a training step) so that host reads inside it are recorded."""
    found: list = []
    calls = [0]

    def watch(owner, attribute):
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def step(*args, **kwargs):
            calls[0] += 1
            with host_reads() as seen:
                out = original(*args, **kwargs)
            found.extend(seen)
            return out

        monkeypatch.setattr(owner, attribute, step)

    return watch, found, calls


def test_counter_sees_a_read():
    with host_reads() as seen:
        float(torch.ones(2).sum())
        torch.ones(3).tolist()
    assert [name for name, _, _ in seen] == ["__float__", "tolist"]


def test_pretraining_step(step_reads, tmp_path):
    watch, found, calls = step_reads
    watch(mae, "train_step")
    cfg = {"data": "synthetic:ohlc?n=300&length=40&seed=0", "window_length": 40, "hidden_size": 8}
    for strategy in ("random", "block", "patch"):
        mae.train(
            {**cfg, "batch_size": 32, "epochs": 1, "patch_len": 10, "mask_strategy": strategy, "aug_multiplier": 1},
            LocalSession(tmp_path / strategy),
        )
    assert calls[0] >= 12 and found == []


@pytest.mark.parametrize("use_crf", [False, True])
def test_span_step(step_reads, tmp_path, use_crf):
    watch, found, calls = step_reads
    watch(mt, "_train_step")
    cfg = {
        "data": "synthetic:ohlc?n=80&labeled=1&seed=2",
        "epochs": 2,
        "batch_size": 16,
        "hidden_size": 8,
        "use_crf": use_crf,
        "plots": False,
        "gradient_stats_interval": 1,
    }
    mt.train(cfg, LocalSession(tmp_path))
    assert calls[0] >= 6 and found == []


def test_classifier_step(step_reads, tmp_path):
    watch, found, calls = step_reads
    watch(clf, "_train_step")
    cfg = {
        "data": "synthetic:ohlc?n=120&length=40&seed=1&labeled=1",
        "window_length": 40,
        "hidden_size": 8,
        "num_heads": 2,
        "folds": 2,
        "epochs": 1,
        "batch_size": 16,
    }
    clf.train(cfg, LocalSession(tmp_path))
    assert calls[0] >= 6 and found == []


def test_contrastive_step(step_reads, tmp_path):
    watch, found, calls = step_reads
    watch(ci.ContrastiveRecipe, "_optimizer_step")
    cfg = {
        "train_data": "synthetic:triples?n=64&seed=0",
        "output_dim": 16,
        "batch_size": 8,
        "max_seq_length": 16,
        "max_steps": 4,
        "warmup_steps": 1,
        "gradient_accumulation_steps": 2,
        "lambda_isotropy": 0.1,
        "lambda_reg": 0.1,
        "eval_every_steps": 2,
    }
    ci.train(cfg, LocalSession(tmp_path))
    assert calls[0] == 4 and found == []
