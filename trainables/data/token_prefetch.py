"""Tokenised micro-batches of (query, positive, negative) triples, prepared ahead of the training
step in a background thread.

Tokenising on the training thread leaves a GPU idle for the tokenizer's time at every step.
Here one worker thread tokenises the next `depth` micro-batches of the epoch's order while the
current one trains (Hugging Face's fast tokenizers run in Rust and release the GIL), and pins
the tensors in page-locked memory on CUDA, so that the copy to the device is asynchronous.
The order is fixed for the epoch (seeded), so a resumed trial gets the same batches.

Why not a torch `DataLoader` with workers: each worker process would load its own copy of the
tokenizer and of the triples (a few GB for MS MARCO), and a resumed trial would have to
rebuild its sampler at an offset; a thread and a fixed index list do neither.

All tokenisation of one process goes through `tokenise`, under one lock: a tokenizer mutates
its truncation and padding settings during a call and refuses concurrent ones ("Already
borrowed").
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

_TOKENIZER_LOCK = threading.Lock()


def tokenise(model, texts: list[str], pin: bool = False) -> dict:
    """The sentence-transformers model's features of `texts` (on the CPU; pinned when `pin`)."""
    with _TOKENIZER_LOCK:
        out = model.preprocess(texts)
    if pin:
        out = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in out.items()}
    return out


def to_device(features: dict, device: torch.device) -> dict:
    """Features on the device; asynchronous from pinned memory."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in features.items()}


@dataclass
class TripleBatch:
    """One micro-batch: its queries' features and its documents' (positives, then negatives)."""

    size: int
    queries: dict
    documents: dict

    def to(self, device: torch.device) -> TripleBatch:
        return TripleBatch(self.size, to_device(self.queries, device), to_device(self.documents, device))


def tokenise_triples(model, triples: list[tuple[str, str, str]], pin: bool = False) -> TripleBatch:
    return TripleBatch(
        len(triples),
        tokenise(model, [t[0] for t in triples], pin),
        tokenise(model, [t[1] for t in triples] + [t[2] for t in triples], pin),
    )


class TriplePrefetch:
    """Micro-batch `position` of an epoch's `order` (indices into `triples`), `batch_size`
    triples each, tokenised ahead; `close()` when the epoch ends or the trial stops."""

    def __init__(self, model, triples: list, order: list[int], batch_size: int, device: torch.device, depth: int = 2):
        self.model, self.triples, self.order, self.batch_size = model, triples, order, batch_size
        self.device, self.depth = device, depth
        self.batches = len(order) // batch_size
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tokenise")
        self._pending: dict[int, Future] = {}

    def _prepare(self, position: int) -> TripleBatch:
        chosen = self.order[position * self.batch_size : (position + 1) * self.batch_size]
        return tokenise_triples(self.model, [self.triples[i] for i in chosen], pin=self.device.type == "cuda")

    def get(self, position: int) -> TripleBatch:
        """Micro-batch `position` on the device; the next `depth` are queued behind it."""
        for ahead in range(position, min(position + 1 + self.depth, self.batches)):
            if ahead not in self._pending:
                self._pending[ahead] = self._pool.submit(self._prepare, ahead)
        return self._pending.pop(position).result().to(self.device)

    def close(self) -> None:
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> TriplePrefetch:
        return self

    def __exit__(self, *_) -> None:
        self.close()
