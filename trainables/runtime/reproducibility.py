"""Seeds, determinism, device and thread settings shared by every trainable."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

# torch.optim's optimizers import torch._dynamo on their first construction (about 1.5 s on a
# 2-core machine). Importing it with the trainable makes it part of the one-time import a
# worker process pays, instead of a surprise inside its first trial.
import torch._dynamo  # noqa: F401,E402


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, numpy and torch (all devices); optionally force deterministic kernels.

    Not deterministic: cuDNN benchmarks its kernels for each input shape on first use and keeps
    the fastest (the trainables' shapes are fixed: a window length and a batch size, plus one
    last partial batch), as a GPU user expects."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def pick_device(requested: str = "auto") -> torch.device:
    """`auto` -> CUDA when this trial sees a GPU (Ray sets CUDA_VISIBLE_DEVICES), else CPU.

    A CUDA device always has its index (the current device, which Ray Train sets to the
    worker's GPU): `torch.device("cuda")` would not compare equal to the tensors' `cuda:0`."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} requested but CUDA is not available on this node")
    return torch.device(requested)


def limit_threads() -> None:
    """Use as many intra-op threads as the CPUs Ray gave this trial (Ray sets OMP_NUM_THREADS);
    without this, concurrent trials each spawn a thread per core and slow each other down."""
    n = os.environ.get("OMP_NUM_THREADS")
    if n and n.isdigit() and int(n) > 0:
        torch.set_num_threads(int(n))


def rng_state() -> dict:
    """Every random generator a trainable draws from (torch, CUDA, numpy's global, Python's), in
    types a `weights_only` checkpoint can hold, so that a resumed trial draws what an
    uninterrupted one would."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(gauss),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    saved = state.get("numpy")
    if isinstance(saved, dict):  # checkpoints before 2026-12 saved the keys only: not restorable
        np.random.set_state(
            (
                "MT19937",
                saved["keys"].numpy().astype(np.uint32),
                saved["pos"],
                saved["has_gauss"],
                saved["cached_gaussian"],
            )
        )
    saved = state.get("python")
    if isinstance(saved, dict):
        random.setstate((saved["version"], tuple(saved["internal"]), saved["gauss_next"]))


def start_trial(cfg, session):
    """What every trainable does first: a session, threads, seeds, and the device.

    `cfg` needs `seed`, `deterministic` and `device`. Returns (session, device).
    """
    from trainables.runtime.session import default_session

    session = session or default_session()
    limit_threads()
    seed_everything(cfg.seed, cfg.deterministic)
    return session, pick_device(cfg.device)
