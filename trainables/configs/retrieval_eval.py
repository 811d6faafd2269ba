"""Settings of `retrieval_eval` (no torch import: `plan` and `validate` read these fast)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trainables.configs.beir_names import distinct_beir
from trainables.configs.contrastive_isotropy import OFFLINE_MINILM, is_local_path

# This is the entry of `retrieval_eval` in the `orchestrator.trainables` registry (pyproject.toml):
# the recipe is imported by the trial's process only, the input checks by `validate`.
RECIPE = "trainables.retrieval_eval"
INPUTS = "trainables.inputs.retrieval_eval"

# `cache` is where embeddings go, not an input, but a relative folder means the same: relative
# to the study file
INPUT_FIELDS = ("beir", "cache")
# A local folder, a checkpoint folder, a hub name or the offline MiniLM (paths resolved against
# the study file's folder; hub names left alone)
MODEL_FIELDS = ("model",)
__all__ = ["INPUT_FIELDS", "MODEL_FIELDS", "Config", "is_local_path"]


class Config(BaseModel):
    """Settings of one evaluation trial: one model on every BEIR folder of `beir`."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(
        OFFLINE_MINILM,
        description="The model: a sentence-transformers folder, a hub name, "
        f"'{OFFLINE_MINILM}', or a checkpoint of contrastive_isotropy (e.g. `${{train.all.checkpoint}}`: "
        "one evaluation trial per trained model).",
    )
    beir: list[str] = Field(min_length=1, description="BEIR folders (corpus.jsonl, queries.jsonl, qrels/<split>.tsv).")
    split: str = "test"
    similarity: Literal["cosine", "euclidean"] = Field("cosine", description="The one the model was trained for.")
    depth: int = Field(
        100,
        ge=100,
        description="Documents per query in the run files: at least 100, since Recall@100 is computed over them.",
    )
    batch_size: int = Field(128, ge=1, description="Texts per forward pass when encoding.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto: bf16 on CUDA, fp32 on CPU.")
    max_seq_length: int | None = Field(None, ge=8, description="Truncate texts (default: the model's own).")
    shard_size: int = Field(
        50_000, ge=1, description="Documents per embedding shard: the unit of caching, resuming and distribution."
    )
    encode_workers: int = Field(
        0, ge=0, description="Ray Data actors encoding shards in parallel; 0: in the trial's own process."
    )
    worker_gpus: float = Field(0.0, ge=0, description="GPUs of each encoding actor (e.g. 1, or 0.5 to pack two).")
    worker_cpus: float = Field(1.0, gt=0, description="CPUs of each encoding actor.")
    cache: str | None = Field(
        None,
        description="Folder or s3:// URI where embedding shards are kept and reused (keyed by the model's and "
        "corpus's content hashes); default: embeddings/ in the trial folder.",
    )
    query_chunk: int = Field(1024, ge=1, description="Queries scored at once (with 16,384 documents: 128 MiB).")
    isotropy_sample: int = Field(1000, ge=10, description="Corpus embeddings sampled for the isotropy scores.")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N (this process: queries and search)")
    deterministic: bool = False
    seed: int = Field(0, description="Seeds the isotropy sample.")

    _distinct_beir = field_validator("beir")(distinct_beir)


def started_resources(config: dict) -> dict[str, float]:
    """CPUs and GPUs of the Ray Data actors a trial with this (resolved) config starts besides
    itself: `encode_workers` x (`worker_cpus`, `worker_gpus`). The orchestrator charges them with
    the trial's own resources for the trial's whole run (a budget must assume them held)."""
    fields = Config.model_fields

    def number(key: str) -> float:
        value = config.get(key, fields[key].default)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0

    workers = number("encode_workers")
    return {"cpu": workers * number("worker_cpus"), "gpu": workers * number("worker_gpus")}
