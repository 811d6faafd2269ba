"""Contrastive fine-tuning of a sentence-transformers encoder with an isotropy regulariser
(SIGReg), evaluated on BEIR-format retrieval data.

Model (sentence-transformers modules): the base model's Transformer and Pooling, a linear
projection (`models.Dense`, identity activation) to `output_dim`, and optionally `Normalize`.
`freeze_base: true` trains the projection only (metadata.json reports trainable vs total
parameters).

Loss per step, on a batch of B triples (query, positive, hard negative):
- in-batch multiple-negatives ranking: cross-entropy of `scale` x sim(q_i, [p_1..p_B, n_1..n_B])
  with target p_i (sim = cosine, or negative Euclidean distance with `similarity: euclidean`);
- `lambda_isotropy` x SIGReg (`trainables/losses/sigreg.py`) on the projected embeddings of queries
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

import contextlib
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from trainables.configs.contrastive_isotropy import Config
from trainables.data.retrieval import load_beir
from trainables.data.token_prefetch import TriplePrefetch, tokenise_triples
from trainables.data.triples import open_triples
from trainables.losses.contrastive import similarity, step_losses
from trainables.metrics.retrieval import METRICS, dataset_name, evaluate_beir, isotropy, write_trec_run
from trainables.models.sentence_encoder import Projected, build_model, resolve_base
from trainables.runtime import checkpoints, distributed, precision
from trainables.runtime.reproducibility import rng_state, set_rng_state, start_trial
from trainables.runtime.selection import ModelChoice
from trainables.runtime.session import Session, write_json, write_metrics_csv


@dataclass
class Progress:
    """Where the run is (saved in checkpoints), and the training losses since the last report."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # epochs done
    position: int = 0  # micro-batches done in the current epoch
    history: list[dict] = field(default_factory=list)
    sums: dict[str, torch.Tensor] = field(default_factory=dict)  # on the device: no host sync per step
    micro_batches: int = 0  # summed into `sums`
    since: float = field(default_factory=time.perf_counter)  # when `sums` started

    def add(self, losses: list[dict[str, torch.Tensor]]) -> None:
        for item in losses:
            for k, v in item.items():
                self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.micro_batches += 1

    def reset(self) -> None:
        self.sums, self.micro_batches, self.since = {}, 0, time.perf_counter()


class ContrastiveRecipe:
    """One trial: `setup` (data, model, optimisation, resume), then `fit` (the steps, with
    validation, reports and checkpoints every `eval_every_steps` and at each epoch end)."""

    def __init__(self, cfg: Config, session: Session, device: torch.device):
        self.cfg, self.session, self.device = cfg, session, device
        self.rank, self.world = distributed.world()
        self.folder = session.artifact_dir

    def setup(self) -> None:
        from transformers import get_linear_schedule_with_warmup

        cfg = self.cfg
        self.train_triples = open_triples(cfg.train_data, cfg.triple_columns)
        self.val_triples = open_triples(cfg.val_data, cfg.triple_columns) if cfg.val_data else []
        self.micro_per_epoch = len(self.train_triples) // self.world // cfg.batch_size
        if self.micro_per_epoch < 1:
            raise ValueError(
                f"{cfg.train_data}: {len(self.train_triples)} triples are fewer than batch_size "
                f"({cfg.batch_size}) x workers ({self.world})"
            )
        self.model = build_model(cfg, self.device)
        freeze_unused(Projected(self.model), self.model, self.train_triples[:2], self.device)
        self.enc = distributed.wrap(Projected(self.model), self.device)
        base_params = [p for m in (self.model[0], self.model[1]) for p in m.parameters() if p.requires_grad]
        proj_params = [p for m in list(self.model)[2:] for p in m.parameters()]
        self.groups = [{"params": proj_params, "lr": cfg.projection_learning_rate}]
        if base_params and cfg.base_learning_rate > 0:
            self.groups.insert(0, {"params": base_params, "lr": cfg.base_learning_rate})
        self.opt = torch.optim.AdamW(self.groups, weight_decay=cfg.weight_decay)
        # a last group shorter than gradient_accumulation_steps is an optimizer step too
        self.steps_per_epoch = math.ceil(self.micro_per_epoch / cfg.gradient_accumulation_steps)
        self.total_steps = (
            cfg.epochs * self.steps_per_epoch
            if cfg.max_steps is None
            else min(cfg.max_steps, cfg.epochs * self.steps_per_epoch)
        )
        self.sched = get_linear_schedule_with_warmup(
            self.opt, min(cfg.warmup_steps, self.total_steps), self.total_steps
        )
        amp = precision.enabled(self.device, cfg.mixed_precision)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp and cfg.mixed_precision == "fp16")
        self.progress = Progress()
        # best_model/ is the model of the report that is best by the stage's select metric when
        # it is a validation metric of every report, else by val/loss
        self.best_choice = ModelChoice(self.session.selection, "val/loss", "min")
        state = self.session.restore_state(map_location=self.device)
        if state is not None:
            self.load_state_dict(state)
        self._write_metadata()

    def state_dict(self) -> dict:
        p = self.progress
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": p.step,
            "epoch": p.epoch,
            "position": p.position,
            "history": p.history,
            "best_choice": self.best_choice.state_dict(),
            "rng": rng_state(),
            "config": self.cfg.model_dump(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.progress = Progress(state["step"], state["epoch"], state["position"], state["history"])
        self.best_choice.load_state_dict(state.get("best_choice"))
        set_rng_state(state["rng"])

    def fit(self) -> dict:
        """Train to `total_steps` (or the last epoch); returns the last reported metrics, or the
        diverged report's."""
        cfg, p = self.cfg, self.progress
        metrics: dict = p.history[-1] if p.history else {}
        p.reset()
        self.enc.train()
        while p.step < self.total_steps and p.epoch < cfg.epochs:
            gen = torch.Generator().manual_seed(cfg.seed * 1000 + p.epoch)
            order = distributed.shard(torch.randperm(len(self.train_triples), generator=gen)).tolist()
            with TriplePrefetch(self.model, self.train_triples, order, cfg.batch_size, self.device) as batches:
                while p.position < self.micro_per_epoch and p.step < self.total_steps:
                    self._optimizer_step(batches)
                    end_of_epoch = p.position >= self.micro_per_epoch
                    last = p.step >= self.total_steps or (end_of_epoch and p.epoch + 1 >= cfg.epochs)
                    if end_of_epoch:
                        p.epoch, p.position = p.epoch + 1, 0
                    if p.step % cfg.eval_every_steps == 0 or end_of_epoch or last:
                        metrics = self._report(end_of_epoch, last)
                        if metrics["diverged"]:
                            return metrics
                    if end_of_epoch:
                        break
        return metrics

    def _optimizer_step(self, batches: TriplePrefetch) -> None:
        """One optimizer step over the next group of micro-batches of the epoch; the group's
        gradient is the mean over its micro-batches, also for a short last group. No host
        synchronisation (the losses stay on the device until the next report), and under DDP one
        gradient all-reduce per optimizer step: the group's other micro-batches run in `no_sync`."""
        cfg, p = self.cfg, self.progress
        group = min(cfg.gradient_accumulation_steps, self.micro_per_epoch - p.position)
        losses = []
        for i in range(group):
            batch = batches.get(p.position)
            p.position += 1
            accumulate = self.enc.no_sync() if i < group - 1 and self.world > 1 else contextlib.nullcontext()
            with accumulate:
                with precision.autocast(self.device, cfg.mixed_precision):
                    step_loss = step_losses(self.enc, batch, cfg, step=p.step)
                self.scaler.scale(step_loss["total"] / group).backward()
            losses.append({k: v.detach().float() for k, v in step_loss.items()})
        if cfg.max_grad_norm:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_([q for g in self.groups for q in g["params"]], cfg.max_grad_norm)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        self.sched.step()
        p.step += 1
        p.add(losses)

    def _report(self, end_of_epoch: bool, last: bool) -> dict:
        """Validate, report (with a checkpoint when due, at each epoch end and at the last step)
        and start new training sums; after the last step also the BEIR evaluation."""
        cfg, p = self.cfg, self.progress
        m = self._train_metrics()
        if self.val_triples:
            m.update(validate(self.enc, self.model, self.val_triples, cfg, self.device))
            if self.best_choice.update(m) and self.rank == 0:
                self.model.save(str(self.folder / "best_model"))
        if last and self.world > 1:  # collective: every rank, before rank 0's evaluation
            m["workers/param_spread"] = distributed.param_spread(self.enc)
        if last and self.rank == 0:
            self.model.save(str(self.folder / "final_model"))
            m.update(_evaluate_all(self.model, cfg, self.folder))
        p.history.append(m)
        if m["diverged"] or not (self.session.checkpoint_due(len(p.history), m) or end_of_epoch or last):
            self.session.report(m)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                if self.rank == 0:
                    checkpoints.save(self.state_dict(), Path(tmp) / checkpoints.STATE_FILE)
                    write_metrics_csv(p.history, self.folder / "metrics.csv")
                    if last:
                        self.model.save(str(Path(tmp) / "final_model"))
                self.session.report(m, checkpoint_dir=tmp)
        p.reset()
        # Saving a model (its model card) and encoding put sentence-transformers models in eval
        # mode: back to training mode, or dropout would be off for the rest of the run.
        self.enc.train()
        return m

    def _train_metrics(self) -> dict:
        """Step, epoch, the mean training losses since the last report (one host sync),
        throughput and learning rates."""
        cfg, p = self.cfg, self.progress
        elapsed = time.perf_counter() - p.since
        means = torch.stack(list(p.sums.values())).div(max(p.micro_batches, 1)).tolist() if p.sums else []
        m = {
            "step": p.step,
            "epoch": p.epoch + (p.position / self.micro_per_epoch),
            **{f"train/{k if k != 'total' else 'loss'}": v for k, v in zip(p.sums, means)},
            "samples_per_s": p.micro_batches * cfg.batch_size * self.world / max(elapsed, 1e-9),
            **{
                f"lr/{'projection' if i == len(self.groups) - 1 else 'base'}": g["lr"]
                for i, g in enumerate(self.opt.param_groups)
            },
        }
        m["diverged"] = not all(math.isfinite(v) for k, v in m.items() if k.startswith("train/"))
        return m

    def _write_metadata(self) -> None:
        cfg = self.cfg
        counts = {
            "total": sum(q.numel() for q in self.model.parameters()),
            "trainable": sum(q.numel() for g in self.groups for q in g["params"]),
        }
        write_json(
            {
                **self.session.context,
                "trainable": "contrastive_isotropy",
                "config": cfg.model_dump(),
                "base_model_path": resolve_base(cfg.base_model),
                "parameters": counts,
                "device": str(self.device),
                "data": {
                    "train_triples": len(self.train_triples),
                    "val_triples": len(self.val_triples),
                    "steps_per_epoch": self.steps_per_epoch,
                    "total_steps": self.total_steps,
                },
                "mixed_precision": precision.describe(self.device, cfg.mixed_precision),
                "workers": distributed.gather(distributed.placement()),
            },
            self.folder / "metadata.json",
        )


def freeze_unused(enc, model, triples: list, device: torch.device) -> list[str]:
    """Stop training the parameters that the loss never reaches (a BERT's pooler under mean
    pooling): found by one forward and backward on two triples (the random state is restored
    afterwards), then `requires_grad_(False)`; their names. So the optimizer holds only
    parameters that learn, and DDP needs no `find_unused_parameters` (a search of the autograd
    graph at every step)."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        batch = tokenise_triples(model, triples).to(device)
        (enc(batch.queries).sum() + enc(batch.documents).sum()).backward()
    unused = [n for n, q in model.named_parameters() if q.requires_grad and q.grad is None]
    for name, q in model.named_parameters():
        q.grad = None
        if name in unused:
            q.requires_grad_(False)
    return unused


def train(config: dict, session: Session | None = None) -> dict:
    """Run one contrastive fine-tuning trial; returns the last reported metrics."""
    cfg = Config.model_validate(config)
    session, device = start_trial(cfg, session)
    recipe = ContrastiveRecipe(cfg, session, device)
    recipe.setup()
    return recipe.fit()


@torch.no_grad()
def validate(enc, model, triples, cfg: Config, device) -> dict:
    """Validation loss, triplet accuracy and isotropy of the validation documents."""
    enc.eval()
    losses, correct, scored, docs = [], [], 0, []
    for i in range(0, len(triples), cfg.batch_size):
        batch = triples[i : i + cfg.batch_size]
        if len(batch) < 2:  # a last batch of one triple has no in-batch negatives: not scored
            continue
        scored += len(batch)
        features = tokenise_triples(model, batch).to(device)
        q, d = enc(features.queries), enc(features.documents)
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
    out = {
        "val/loss": float(torch.stack(losses).mean()),
        "val/triplet_accuracy": float(torch.stack(correct).sum()) / scored,
    }
    if docs:
        emb = torch.cat(docs).cpu()
        emb = F.normalize(emb, dim=-1) if cfg.normalize else emb
        out.update({f"val/{k}": v for k, v in isotropy(emb[: cfg.isotropy_sample]).items()})
    return out


def _evaluate_all(model, cfg: Config, folder: Path) -> dict:
    """Every BEIR folder of `beir`: `final/<dataset>/<metric>`, their means `final/<metric>`, and
    a TREC run file per dataset in `runs/`."""
    out: dict[str, float] = {}
    if not cfg.beir:
        return out
    (folder / "runs").mkdir(exist_ok=True)
    rows = []
    for source in cfg.beir:
        dataset = load_beir(source, cfg.beir_split)
        name = dataset_name(source)
        m, run = evaluate_beir(
            model, dataset, cfg.similarity, batch_size=cfg.encode_batch_size, sample=cfg.isotropy_sample, seed=cfg.seed
        )
        write_trec_run(folder / "runs" / f"{name}.trec", run, "contrastive_isotropy")
        out.update({f"final/{name}/{k}": v for k, v in m.items() if k != "queries"})
        rows.append(m)
    for k in (*METRICS, "isotropy_cosine", "isotropy_partition"):
        out[f"final/{k}"] = sum(r[k] for r in rows) / len(rows)
    return out
