"""The losses of `contrastive_isotropy` on a batch of (query, positive, hard negative) triples:
in-batch multiple-negatives ranking (cross-entropy of scale x similarity against every
positive and negative of the batch), SIGReg on the projected embeddings before normalisation,
and a variance-covariance penalty (VICReg's terms) that keeps every dimension in use."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainables.configs.contrastive_isotropy import Config
from trainables.data.token_prefetch import TripleBatch
from trainables.losses.sigreg import sigreg


def similarity(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    """Pairwise similarity: cosine, or negative Euclidean distance."""
    if kind == "cosine":
        return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    return -torch.cdist(a.float(), b.float())


def var_cov(z: torch.Tensor) -> torch.Tensor:
    """VICReg's variance and covariance terms: mean_j max(0, 1 - std_j) + sum_{j != k} cov_jk^2 / d."""
    z = z.float()
    std = torch.sqrt(z.var(dim=0) + 1e-4)
    zc = z - z.mean(dim=0)
    cov = zc.T @ zc / max(len(z) - 1, 1)
    off = cov - torch.diag(torch.diag(cov))
    return F.relu(1 - std).mean() + (off**2).sum() / z.shape[1]


def step_losses(enc, batch: TripleBatch, cfg: Config, *, step: int) -> dict:
    """The losses of one micro-batch of triples, tokenised and on the device: `mnrl`, `sigreg`
    and `reg` when weighted, and their weighted sum `total`."""
    q = enc(batch.queries)
    d = enc(batch.documents)
    scores = (
        cfg.scale * similarity(q, d, cfg.similarity) if cfg.similarity == "cosine" else similarity(q, d, "euclidean")
    )
    mnrl = F.cross_entropy(scores.float(), torch.arange(batch.size, device=q.device))
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
