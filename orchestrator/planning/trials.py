"""One planned trial (`TrialSpec`) and its identity.

Trial identity is a content hash of (trainable, config as written, seed): re-running the same
study finds the same trials (and their folders in storage), and two rows of a stage that
resolve to the same trial are an error.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from orchestrator.study import references


def deep_merge(base: dict, override: dict) -> dict:
    """A copy of `base` with `override` merged in (nested dicts merged, everything else replaced)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def trial_id(trainable: str, config: dict, seed: int) -> str:
    payload = json.dumps({"trainable": trainable, "config": config, "seed": seed}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def grid_label(value: Any) -> str:
    """A grid value as it appears in trial names: itself if short, else a 6-character digest
    (the full value is in the trial's config and in `plan`)."""
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    if len(text) <= 20 and "/" not in text:
        return text
    return "~" + hashlib.sha256(text.encode()).hexdigest()[:6]


@dataclass
class TrialSpec:
    stage: str
    trainable: str
    variant: str | None
    seed: int
    config: dict  # as written (merged), hashed into the id
    grid: dict  # the grid values of this trial
    id: str
    run_config: dict = field(default_factory=dict)  # config with input paths resolved: what the trial gets
    upstream: dict = field(default_factory=dict)  # lineage: which upstream trials its references used

    @property
    def name(self) -> str:
        parts = [self.stage, self.variant or "base"]
        parts += [f"{k}={grid_label(v)}" for k, v in self.grid.items()]
        name = "/".join(parts + [f"s{self.seed}"])
        fan = [v["trial"].split("/", 1)[-1] for k, v in sorted(self.upstream.items()) if "." in k]
        return name + "".join(f"@{f}" for f in fan)

    @property
    def has_refs(self) -> bool:
        return any(True for _ in references.walk(self.config))

    def to_dict(self) -> dict:
        return {
            "stage": self.stage,
            "trainable": self.trainable,
            "variant": self.variant,
            "seed": self.seed,
            "config": self.run_config,
            "grid": self.grid,
            "id": self.id,
            "name": self.name,
            "upstream": self.upstream,
        }
