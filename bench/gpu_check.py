"""The GPU check of issue 18: one prepared script for a machine with one CUDA GPU, no network and
no Ray. Prints one table and exits 1 on any failure or any mismatch with the CPU beyond
tolerance (missed speed targets are reported in the table, not failures).

    python bench/gpu_check.py [--json gpu_check.json] [--quick] [--mps]

What it checks, each against the CPU or against the bare model on the same GPU:
- same numbers: the pretraining data and validation masks equal on CPU and CUDA (bit for bit);
  each model's loss on the same batch and weights within tolerance (TF32 is on for cuDNN);
  the batched CRF decoder equal to pytorch-crf's on the CPU;
- no host synchronisation inside any training step (`torch.cuda.set_sync_debug_mode("warn")`
  around the step; the contrastive step's base model checks its padding mask once per forward,
  transformers' own read: counted and shown);
- a one-rank NCCL process group through every collective the trainables use (the mean of a
  loss, the parameter spread's MAX/MIN, gathering placements) and DDP with `no_sync`;
- each trainable for a few hundred steps through `LocalSession`, fp32 and bf16: its samples/s
  next to the bare model's forward + backward + step at the same batch (target >= 0.9x); the CRF
  decode time against pytorch-crf's on the GPU; the evaluator's encoding docs/s against
  `SentenceTransformer.encode`; the extrapolated wall time of the seed's exp1 pretraining at
  full size (11,873 windows x 5 passes = 59,365 samples per epoch, 75 epochs; the seed: 35-40
  min on an RTX 4090; target <= 3 min);
- packing: four small pretraining trials as four processes on the GPU against one alone
  (aggregate samples/s), and with `--mps` the same under CUDA MPS (needs
  `nvidia-cuda-mps-control`; it is started in a private pipe folder and stopped after).

The contrastive trainable uses a MiniLM-sized BERT (6 layers, 384 wide) randomly initialised and
saved in a temporary folder: the lent machine has no network, and speed does not depend on the
weights. Wheels the machine lacks (pydantic and its parts, pytorch-crf) travel with the
command: `bench/gpu_wheels.sh` downloads them into `.whl/` (see bench/README.md).

`--quick` shrinks every size (a smoke run, also on a CPU: CUDA-only checks say `skipped`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

EXP1_SAMPLES_PER_EPOCH = 11_873 * 5  # the seed's 59,365: every window once plus four augmented passes
EXP1_EPOCHS = 75


class Check:
    """The table: one row per measurement or comparison; failures make the exit code 1."""

    def __init__(self):
        self.rows: list[dict] = []

    def add(self, section: str, what: str, value, target: str = "", ok: bool | None = None, fails: bool = False):
        self.rows.append({"section": section, "what": what, "value": value, "target": target, "ok": ok, "fails": fails})
        mark = "" if ok is None else ("ok" if ok else ("FAIL" if fails else "missed"))
        print(f"  {section:11s} {what:66s} {_fmt(value):>17s} {target:>10s} {mark}", flush=True)

    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["fails"] and not r["ok"]]

    @contextlib.contextmanager
    def section(self, name: str):
        """Runs a section; an exception is a failed row (with its traceback printed), not the end."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - every section runs; the exit code reports failures
            traceback.print_exc()
            self.add(name, f"raised {type(exc).__name__}: {str(exc)[:80]}", "", ok=False, fails=True)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def cuda() -> bool:
    return torch.cuda.is_available()


def synced() -> None:
    if cuda():
        torch.cuda.synchronize()


def per_call_s(fn, reps: int, warmup: int = 3) -> float:
    """Seconds per call of `fn`, the device drained before and after."""
    for _ in range(warmup):
        fn()
    synced()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    synced()
    return (time.perf_counter() - t0) / reps


@contextlib.contextmanager
def sync_warnings(found: list):
    """Inside: every synchronising CUDA call warns (torch's sync debug mode); the warnings go to `found`."""
    if not cuda():
        yield
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")
    found.extend(str(w.message) for w in caught if "synchroniz" in str(w.message).lower())


def watch_step(owner, attribute: str, found: list, calls: list):
    """Wraps a training step so that synchronising calls inside it are recorded; returns the undo."""
    original = getattr(owner, attribute)

    def step(*args, **kwargs):
        calls.append(1)
        with sync_warnings(found):
            return original(*args, **kwargs)

    setattr(owner, attribute, step)
    return lambda: setattr(owner, attribute, original)


# --- the same numbers on the CPU and on the GPU ------------------------------------------------


def same_numbers(check: Check, device: torch.device, quick: bool) -> None:
    from trainables import lstm_mae_pretrain as mae
    from trainables.configs.multitask_span import Config as SpanConfig
    from trainables.data import masking
    from trainables.data.span_targets import Batch
    from trainables.losses.span import task_losses
    from trainables.models import causal_classifier
    from trainables.models.masked_autoencoder import MaskedAutoencoder
    from trainables.models.span_model import SpanModel

    n = 600 if quick else 4000
    for strategy in ("patch", "block", "random"):
        cfg = mae.Config(data=f"synthetic:ohlc?n={n}&length=105&seed=0", mask_strategy=strategy)
        cpu, dev = mae.load_windows(cfg, torch.device("cpu")), mae.load_windows(cfg, device)
        equal = (
            torch.equal(cpu.val_mask, dev.val_mask.cpu())
            and torch.equal(cpu.common_mask, dev.common_mask.cpu())
            and torch.equal(cpu.val, dev.val.cpu())
            and cpu.interp_mse == dev.interp_mse
        )
        check.add("same", f"pretraining data and {strategy} validation masks", equal, "bit-equal", equal, fails=True)

    def close(name, a: torch.Tensor, b: torch.Tensor, rtol: float):
        a, b = a.detach().cpu().double(), b.detach().cpu().double()
        err = float((a - b).abs().max() / (b.abs().max() + 1e-12))
        check.add("same", f"{name}: CUDA vs CPU, max rel. difference", err, f"<= {rtol:g}", err <= rtol, fails=True)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 105, 4, generator=g)
    mask = masking.make_mask("patch", (64, 105, 4), 0.15, "cpu", generator=g)
    torch.manual_seed(0)
    model = MaskedAutoencoder(128, 1, 0.0)
    loss_cpu = masking.masked_mse(model(x, mask), x, mask)
    loss_dev = masking.masked_mse(model.to(device)(x.to(device), mask.to(device)), x.to(device), mask.to(device))
    close("pretraining masked MSE", loss_dev, loss_cpu, 2e-3)

    torch.manual_seed(0)
    clf, _ = causal_classifier.build(3, hidden_size=128, num_heads=8, dropout=0.0, encoder=None, device="cpu")
    clf.eval()
    logits_cpu = clf(x)
    close("classifier logits", clf.to(device)(x.to(device)), logits_cpu, 2e-3)

    span_cfg = SpanConfig(data="synthetic:ohlc", use_crf=True, dropout=0.0)
    torch.manual_seed(0)
    span = SpanModel(12, 3, span_cfg).eval()
    feats = torch.randn(64, 105, 12, generator=g)
    starts = torch.randint(5, 60, (64,), generator=g)
    b_cpu = Batch(feats, torch.randint(0, 3, (64,), generator=g), starts, starts + 30, span_cfg)
    out_cpu = span(feats)
    losses_cpu = task_losses(span, out_cpu, b_cpu, span_cfg)
    span.to(device)
    b_dev = Batch(feats.to(device), b_cpu.y.to(device), starts.to(device), (starts + 30).to(device), span_cfg)
    out_dev = span(feats.to(device))
    close("span model's four task losses (CRF on)", task_losses(span, out_dev, b_dev, span_cfg), losses_cpu, 2e-3)
    paths_cpu = span.to("cpu").decode(out_cpu["span"])
    paths_dev = span.to(device).decode(out_dev["span"])
    agree = float((paths_cpu == paths_dev.cpu()).float().mean())
    check.add("same", "CRF paths: CUDA vs CPU, share of equal bars", agree, ">= 0.999", agree >= 0.999, fails=True)


# --- CRF decoding ------------------------------------------------------------------------------


def crf_decoding(check: Check, device: torch.device, quick: bool) -> None:
    from torchcrf import CRF

    from trainables.models.crf import log_likelihood, viterbi_decode

    g = torch.Generator().manual_seed(1)
    crf = CRF(2, batch_first=True)
    with torch.no_grad():
        for p in (crf.start_transitions, crf.end_transitions, crf.transitions):
            p.copy_(torch.randn(p.shape, generator=g))
    n = 128 if quick else 1024
    emissions = torch.randn(n, 105, 2, generator=g) * 2
    lengths = torch.randint(1, 106, (n,), generator=g)
    mask = torch.arange(105).unsqueeze(0) < lengths.unsqueeze(1)
    reference = crf.decode(emissions, mask=mask)
    crf_dev = crf.to(device)
    ours = viterbi_decode(crf_dev, emissions.to(device), mask.to(device)).cpu()
    equal = all(row[:k].tolist() == path for row, path, k in zip(ours, reference, lengths.tolist()))
    check.add(
        "crf",
        f"batched Viterbi on {device.type} == pytorch-crf on CPU ({n} windows)",
        equal,
        "equal",
        equal,
        fails=True,
    )
    tags = torch.randint(0, 2, (n, 105), generator=g)
    expected = crf.to("cpu")(emissions, tags, mask=mask, reduction="none")
    got = log_likelihood(crf_dev.to(device), emissions.to(device), tags.to(device), mask.to(device)).cpu()
    err = float((got - expected).abs().max() / expected.abs().max())
    check.add("crf", "log-likelihood vs pytorch-crf, max rel. difference", err, "<= 1e-4", err <= 1e-4, fails=True)
    em, full = emissions[:42].to(device), torch.ones(42, 105, dtype=torch.bool, device=device)
    theirs = per_call_s(lambda: torch.tensor(crf_dev.decode(em, mask=full), device=device), 3 if quick else 10)
    batched = per_call_s(lambda: viterbi_decode(crf_dev, em), 3 if quick else 20)
    check.add("crf", "decode 42 x 105 bars: pytorch-crf ms", theirs * 1e3)
    check.add("crf", "decode 42 x 105 bars: batched ms (speed-up in next row)", batched * 1e3)
    check.add("crf", "decode speed-up", theirs / batched, "> 1", theirs / batched > 1)


# --- collectives -------------------------------------------------------------------------------


def collectives(check: Check, device: torch.device) -> None:
    import socket

    import torch.distributed as dist

    from trainables.runtime import distributed

    backend = "nccl" if device.type == "cuda" else "gloo"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    real_world = distributed.world
    # One rank, told it is one of two: the helpers then run their collectives (alone, a rank
    # skips them); the sums are of this rank's values only, so each result is known.
    distributed.world = lambda: (0, 2)
    try:
        loss = torch.tensor(3.0, device=device)
        mean = float(distributed.mean(loss))
        check.add("collectives", f"{backend}: mean of a loss tensor on {device.type}", mean, "1.5", mean == 1.5, True)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)).to(device)
        net = distributed.wrap(model, device)
        ddp = isinstance(net, torch.nn.parallel.DistributedDataParallel)
        x = torch.randn(32, 8, device=device)
        with net.no_sync():
            net(x).sum().backward()
        net(x).sum().backward()
        grads = all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        check.add(
            "collectives",
            "DDP forward/backward with no_sync, then synced",
            ddp and grads,
            "ok",
            ddp and grads,
            fails=True,
        )
        spread = distributed.param_spread(net)
        check.add("collectives", "parameter spread (all_reduce MAX and MIN)", spread, "0", spread == 0.0, fails=True)
        placed = distributed.gather(distributed.placement())
        check.add("collectives", "all_gather_object of the placement", len(placed), "2", len(placed) == 2, fails=True)
    finally:
        distributed.world = real_world
        dist.destroy_process_group()


# --- trainables against their bare models ------------------------------------------------------


def _bare_pretraining(device, batch: int, hidden: int, dtype: str) -> float:
    from trainables.data import masking
    from trainables.models.masked_autoencoder import MaskedAutoencoder
    from trainables.runtime import precision

    model = MaskedAutoencoder(hidden, 1, 0.1).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 105, 4, device=device)
    mask = masking.make_mask("patch", (batch, 105, 4), 0.15, device)

    def step():
        with precision.autocast(device, dtype):
            loss = masking.masked_mse(model(x, mask), x, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return batch / per_call_s(step, 20)


def pretraining(check: Check, device, dtype: str, quick: bool, folder: Path) -> float:
    from trainables import lstm_mae_pretrain as mae

    n, epochs = (800, 2) if quick else (8000, 3)
    found, calls = [], []
    undo = watch_step(mae, "train_step", found, calls)
    session = end_only_session(folder / f"mae-{dtype}")
    try:
        mae.train(
            {
                "data": f"synthetic:ohlc?n={n}&length=105&seed=0",
                "epochs": epochs,
                "mixed_precision": dtype,
                "early_stopping_patience": None,
                "device": str(device),
            },
            session,
        )
    finally:
        undo()
    ours = statistics.median(m["samples_per_s"] for m in session.metrics[1:])
    bare = _bare_pretraining(device, 256, 128, dtype)
    _steps_row(check, f"lstm_mae_pretrain {_label(dtype)}", calls, found, allowed=0)
    _ratio_rows(check, f"lstm_mae_pretrain {_label(dtype)}", ours, bare)
    minutes = EXP1_SAMPLES_PER_EPOCH * EXP1_EPOCHS / ours / 60
    check.add("pretrain", f"exp1 at full size ({_label(dtype)}), extrapolated minutes", minutes, "<= 3", minutes <= 3)
    return ours


def span(check: Check, device, dtype: str, use_crf: bool, quick: bool, folder: Path) -> None:
    from trainables import multitask_span as mt
    from trainables.configs.multitask_span import Config
    from trainables.data.span_targets import Batch
    from trainables.losses.span import task_losses
    from trainables.losses.uncertainty import TaskWeighting
    from trainables.models.span_model import SpanModel
    from trainables.runtime import precision

    name = f"multitask_span {_label(dtype)}" + (" crf" if use_crf else "")
    n, epochs = (300, 3) if quick else (3000, 6)
    found, calls = [], []
    undo = watch_step(mt, "_train_step", found, calls)
    session = end_only_session(folder / name.replace(" ", "-"))
    try:
        mt.train(
            {
                "data": f"synthetic:ohlc?n={n}&length=105&labeled=1&seed=0",
                "epochs": epochs,
                "batch_size": 32,
                "use_crf": use_crf,
                "plots": False,
                "mixed_precision": dtype,
                "device": str(device),
                "early_stopping_patience": None,
            },
            session,
        )
    finally:
        undo()
    ours = statistics.median(m["samples_per_s"] for m in session.metrics[1:])
    cfg = Config(data="x", use_crf=use_crf)
    model = SpanModel(12, 3, cfg).to(device)
    weighting = TaskWeighting(mt.TASK_KINDS, cfg.loss_weighting, cfg.loss_weights).to(device)
    opt = torch.optim.AdamW([*model.parameters(), weighting.log_var], lr=1e-3, foreach=True)
    starts = torch.randint(5, 60, (32,), device=device)
    b = Batch(
        torch.randn(32, 105, 12, device=device), torch.randint(0, 3, (32,), device=device), starts, starts + 30, cfg
    )

    def step():
        with precision.autocast(device, dtype):
            objective = weighting(task_losses(model, model(b.x), b, cfg))
        opt.zero_grad(set_to_none=True)
        objective.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0, foreach=True)
        opt.step()

    bare = 32 / per_call_s(step, 20)
    _steps_row(check, name, calls, found, allowed=0)
    _ratio_rows(check, name, ours, bare)


def classifier(check: Check, device, dtype: str, quick: bool, folder: Path) -> None:
    from trainables import lstm_classifier_finetune as clf
    from trainables.models import causal_classifier
    from trainables.runtime import precision

    name = f"lstm_classifier_finetune {_label(dtype)}"
    n, epochs, batch = (300, 3, 64) if quick else (3000, 6, 64)
    found, calls = [], []
    undo = watch_step(clf, "_train_step", found, calls)
    timed: list[tuple[int, float]] = []
    epoch = clf._train_epoch

    def timed_epoch(model, opt, loss_fn, data, cfg):
        t0 = time.perf_counter()
        out = epoch(model, opt, loss_fn, data, cfg)  # ends in one host read: the device is drained
        timed.append((len(data[1]), time.perf_counter() - t0))
        return out

    clf._train_epoch = timed_epoch
    try:
        clf.train(
            {
                "data": f"synthetic:ohlc?n={n}&length=105&labeled=1&seed=1",
                "folds": 2,
                "epochs": epochs,
                "batch_size": batch,
                "early_stopping_patience": None,
                "mixed_precision": dtype,
                "device": str(device),
            },
            end_only_session(folder / name.replace(" ", "-")),
        )
    finally:
        undo()
        clf._train_epoch = epoch
    ours = statistics.median(k / s for k, s in timed[1:])
    model, _ = causal_classifier.build(2, hidden_size=128, num_heads=8, dropout=0.1, encoder=None, device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(batch, 105, 4, device=device), torch.randint(0, 2, (batch,), device=device)

    def step():
        with precision.autocast(device, dtype):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    bare = batch / per_call_s(step, 20)
    _steps_row(check, name, calls, found, allowed=0)
    _ratio_rows(check, name, ours, bare)


def random_bert(folder: Path) -> Path:
    """A MiniLM-sized BERT, randomly initialised, with a word-level vocabulary of the synthetic texts."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from trainables.data import synthetic_text

    words = sorted({w for t in synthetic_text.triples(2000, seed=0) for text in t for w in text.split()})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(words) + 5,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def contrastive(check: Check, device, dtype: str, base: Path, quick: bool, folder: Path) -> None:
    from trainables import contrastive_isotropy as ci
    from trainables.configs.contrastive_isotropy import Config
    from trainables.data import synthetic_text
    from trainables.data.token_prefetch import tokenise_triples
    from trainables.losses.contrastive import step_losses
    from trainables.models.sentence_encoder import Projected, build_model
    from trainables.runtime import precision

    name = f"contrastive_isotropy {_label(dtype)}"
    batch, steps = (16, 12) if quick else (64, 200)
    found, calls = [], []
    undo = watch_step(ci.ContrastiveRecipe, "_optimizer_step", found, calls)
    session = end_only_session(folder / name.replace(" ", "-"))
    cfg = {
        "base_model": str(base),
        "train_data": f"synthetic:triples?n={batch * (steps + 2)}&seed=0",
        "batch_size": batch,
        "max_steps": steps,
        "eval_every_steps": max(steps // 4, 1),
        "warmup_steps": 1,
        "output_dim": 512,
        "max_seq_length": 32,
        "mixed_precision": dtype,
        "device": str(device),
    }
    try:
        ci.train(cfg, session)
    finally:
        undo()
    ours = statistics.median(m["samples_per_s"] for m in session.metrics[1:])
    c = Config(**{k: v for k, v in cfg.items()})
    model = build_model(c, device)
    enc = Projected(model).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    tokens = tokenise_triples(model, synthetic_text.triples(batch, seed=5)).to(device)

    def step():
        with precision.autocast(device, dtype):
            loss = step_losses(enc, tokens, c, step=0)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    bare = batch / per_call_s(step, 5 if quick else 30)
    # transformers reads the padding mask of each forward once (queries, documents)
    _steps_row(check, name, calls, found, allowed=2 * len(calls))
    _ratio_rows(check, name, ours, bare)


def encoding(check: Check, device, base: Path, quick: bool) -> None:
    from sentence_transformers import SentenceTransformer

    from trainables.data import synthetic_text
    from trainables.data.retrieval import BeirDataset
    from trainables.metrics.retrieval import evaluate_beir

    n = 2000 if quick else 50_000
    data = synthetic_text.beir(n, 100, seed=3)
    dataset = BeirDataset("bench", data["corpus"], data["queries"], data["qrels"])
    model = SentenceTransformer(str(base), device=str(device))
    if device.type == "cuda":
        model = model.to(torch.bfloat16)
    texts = list(dataset.corpus.values())
    model.encode(texts[:512], batch_size=256, show_progress_bar=False)
    synced()
    t0 = time.perf_counter()
    model.encode(texts, batch_size=256, convert_to_tensor=True, show_progress_bar=False)
    synced()
    plain = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    evaluate_beir(model, dataset, "cosine", batch_size=256, sample=500)
    synced()
    ours = n / (time.perf_counter() - t0)
    check.add("encode", "SentenceTransformer.encode, docs/s (bf16 on CUDA)", plain)
    check.add("encode", "evaluator: encode + exact top-100 + metrics, docs/s", ours)
    check.add("encode", "evaluator / encode", ours / plain, ">= 0.9", ours / plain >= 0.9)


def _label(dtype: str) -> str:
    return "fp32" if dtype == "no" else dtype


def _steps_row(check: Check, name: str, calls: list, found: list, allowed: int) -> None:
    if not cuda():
        check.add("no-sync", f"{name}: synchronising calls in {len(calls)} steps", "skipped (no CUDA)")
        return
    check.add(
        "no-sync",
        f"{name}: synchronising calls in {len(calls)} steps",
        len(found),
        f"<= {allowed}",
        len(found) <= allowed,
        fails=True,
    )
    for message in sorted(set(found))[:3]:
        print(f"      {message[:150]}")


def _ratio_rows(check: Check, name: str, ours: float, bare: float) -> None:
    check.add("speed", f"{name}: samples/s in the trainable", ours)
    check.add("speed", f"{name}: samples/s of the bare model step", bare)
    check.add("speed", f"{name}: trainable / bare", ours / bare, ">= 0.9", ours / bare >= 0.9)


def end_only_session(folder: Path):
    """A LocalSession that checkpoints at the last epoch only (speed is measured, not resumption)."""
    from trainables.runtime.session import LocalSession

    return LocalSession(folder, checkpoint_every=None, checkpoint_interval_s=1e9)


# --- packing -----------------------------------------------------------------------------------


PACKED_TRIAL = (
    "import sys, json, tempfile; sys.path.insert(0, {root!r});"
    "from trainables import lstm_mae_pretrain as mae;"
    "from trainables.runtime.session import LocalSession;"
    "s = LocalSession(tempfile.mkdtemp(), checkpoint_every=None, checkpoint_interval_s=1e9);"
    "mae.train({{'data': 'synthetic:ohlc?n={n}&length=105&seed=0', 'epochs': {epochs}, 'hidden_size': 64,"
    " 'batch_size': 128, 'early_stopping_patience': None}}, s);"
    "print('RATE', sorted(m['samples_per_s'] for m in s.metrics[1:])[len(s.metrics[1:]) // 2])"
)


def _packed_rates(k: int, quick: bool, env: dict) -> list[float]:
    code = PACKED_TRIAL.format(root=str(ROOT), n=600 if quick else 6000, epochs=2 if quick else 4)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(k)
    ]
    rates = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        lines = [line for line in out.splitlines() if line.startswith("RATE ")]
        if p.returncode or not lines:
            raise RuntimeError(f"packed trial failed: {err[-500:]}")
        rates.append(float(lines[-1].split()[1]))
    return rates


def _threaded_rate(k: int, quick: bool) -> float:
    """k of the packed trials in this process at once, each in a thread with its own CUDA
    stream (the seeds of a variant in one process; they share the seeded global RNG, so this
    measures throughput only)."""
    import threading

    from trainables import lstm_mae_pretrain as mae

    rates: list[float] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            with torch.cuda.stream(torch.cuda.Stream()) if cuda() else contextlib.nullcontext():
                s = end_only_session(Path(tempfile.mkdtemp()))
                mae.train(
                    {
                        "data": f"synthetic:ohlc?n={600 if quick else 6000}&length=105&seed=0",
                        "epochs": 2 if quick else 4,
                        "hidden_size": 64,
                        "batch_size": 128,
                        "early_stopping_patience": None,
                    },
                    s,
                )
                rates.append(statistics.median(m["samples_per_s"] for m in s.metrics[1:]))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return sum(rates)


def packing(check: Check, quick: bool, mps: bool) -> None:
    # each trial gets a quarter of the cores, as Ray gives four packed trials of `cpu: N/4`
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 4) // 4)))
    alone = _packed_rates(1, quick, env)[0]
    packed = sum(_packed_rates(4, quick, env))
    check.add("packing", "small pretraining trial alone, samples/s", alone)
    check.add("packing", "four such trials as processes, total samples/s", packed)
    check.add("packing", "four processes / one alone (throughput gain)", packed / alone)
    threaded = _threaded_rate(4, quick)
    check.add("packing", "four in one process (threads, own streams), total samples/s", threaded)
    check.add("packing", "one process / four processes", threaded / packed)
    if not mps:
        return
    control = shutil.which("nvidia-cuda-mps-control")
    if control is None:
        check.add("packing", "CUDA MPS", "skipped (no nvidia-cuda-mps-control)")
        return
    pipes = tempfile.mkdtemp(prefix="mps-")
    env = dict(env, CUDA_MPS_PIPE_DIRECTORY=pipes, CUDA_MPS_LOG_DIRECTORY=pipes)
    subprocess.run([control, "-d"], env=env, check=True)
    try:
        mps_packed = sum(_packed_rates(4, quick, env))
    finally:
        subprocess.run([control], input="quit\n", text=True, env=env, check=False)
    check.add("packing", "four processes under MPS, total samples/s", mps_packed)
    check.add("packing", "MPS / no MPS (four processes)", mps_packed / packed)


# --- main --------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="also write the table here")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run; also on CPU)")
    ap.add_argument("--mps", action="store_true", help="also measure packing under CUDA MPS")
    ap.add_argument("--skip", nargs="*", default=[], help="sections to leave out")
    args = ap.parse_args()
    started = time.perf_counter()
    device = torch.device("cuda", 0) if cuda() else torch.device("cpu")
    name = torch.cuda.get_device_name(0) if cuda() else "CPU (no CUDA: a smoke run)"
    print(
        f"gpu_check on {name}; torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"cuDNN {torch.backends.cudnn.version() if cuda() else None}",
        flush=True,
    )
    check = Check()
    folder = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    steps = [
        ("same", lambda: same_numbers(check, device, args.quick)),
        ("crf", lambda: crf_decoding(check, device, args.quick)),
        ("collectives", lambda: collectives(check, device)),
    ]
    for dtype in ("no", "bf16") if cuda() else ("no",):
        steps += [
            (f"pretrain-{dtype}", lambda d=dtype: pretraining(check, device, d, args.quick, folder)),
            (f"span-{dtype}", lambda d=dtype: span(check, device, d, False, args.quick, folder)),
            (f"span-crf-{dtype}", lambda d=dtype: span(check, device, d, True, args.quick, folder)),
            (f"classifier-{dtype}", lambda d=dtype: classifier(check, device, d, args.quick, folder)),
        ]
    base = folder / "random-bert"
    steps.append(("bert", lambda: random_bert(base)))
    for dtype in ("no", "bf16") if cuda() else ("no",):
        steps.append((f"contrastive-{dtype}", lambda d=dtype: contrastive(check, device, d, base, args.quick, folder)))
    steps += [("encode", lambda: encoding(check, device, base, args.quick))]
    if cuda() or args.quick:  # on a CPU only as a smoke run of the code
        steps.append(("packing", lambda: packing(check, args.quick, args.mps)))
    for key, run in steps:
        if key.split("-")[0] in args.skip or key in args.skip:
            continue
        with check.section(key):
            run()
    shutil.rmtree(folder, ignore_errors=True)
    failed = check.failed()
    minutes = (time.perf_counter() - started) / 60
    print(f"gpu_check: {len(check.rows)} rows, {len(failed)} failed, {minutes:.1f} min on {name}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"device": name, "torch": torch.__version__, "rows": check.rows}, indent=2, default=str)
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
