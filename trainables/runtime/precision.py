"""Mixed precision of a trial: `mixed_precision: bf16` (or `fp16`, the contrastive trainable only)
autocasts the training forward on CUDA; on the CPU it is ignored (bf16 autocast there is slower
than float32 on most CPUs) and metadata.json says so."""

from __future__ import annotations

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def enabled(device: torch.device, mode: str) -> bool:
    return device.type == "cuda" and mode != "no"


def autocast(device: torch.device, mode: str) -> torch.autocast:
    """The autocast context of the training forward (a no-op when not enabled)."""
    return torch.autocast(device.type, dtype=DTYPES.get(mode, torch.bfloat16), enabled=enabled(device, mode))


def describe(device: torch.device, mode: str) -> str:
    """What metadata.json records: the mode in effect, or why it is not."""
    if mode == "no" or enabled(device, mode):
        return mode
    return f"{mode} ignored: not on CUDA"
