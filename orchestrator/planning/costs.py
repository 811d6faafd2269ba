"""GPU-hour prices (`cluster/prices.yaml`, USD by key): what `plan` estimates a study will cost
and `report` prices the GPU-hours it took."""

from __future__ import annotations

from pathlib import Path

from orchestrator.errors import Problem, UserError
from orchestrator.study.yaml_doc import load_yaml

PRICES = Path(__file__).resolve().parents[2] / "cluster" / "prices.yaml"


def load_prices(path: Path = PRICES) -> dict[str, float]:
    """GPU-hour prices by key (USD); see cluster/prices.yaml."""
    if not path.exists():
        return {}
    doc = load_yaml(path)
    prices = doc.data.get("gpu_hour_usd", {})
    bad = [k for k, v in prices.items() if not isinstance(v, (int, float)) or v < 0]
    if bad:
        raise UserError(Problem(str(path), f"gpu_hour_usd.{bad[0]}: expected a price >= 0"))
    return {k: float(v) for k, v in prices.items()}


def gpu_price(key: str | None) -> float | None:
    """The price of `--gpu-price KEY` (None without one); an unknown key is a one-line error."""
    if key is None:
        return None
    prices = load_prices()
    if key not in prices:
        raise UserError(
            Problem("--gpu-price", f"unknown price {key!r}; cluster/prices.yaml has: {', '.join(prices) or '(none)'}")
        )
    return prices[key]
