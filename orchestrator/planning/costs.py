"""Prices (`cluster/prices.yaml`, USD per GPU-hour and per CPU-hour by key): what `plan`
estimates a study will cost, what `report` prices the hours it took, and what a `budget:` counts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import Problem, UserError
from orchestrator.study.yaml_doc import load_yaml

PRICES = Path(__file__).resolve().parents[2] / "cluster" / "prices.yaml"
SECTIONS = {"gpu": "gpu_hour_usd", "cpu": "cpu_hour_usd"}


@dataclass(frozen=True)
class Prices:
    """USD per GPU-hour and per CPU-hour (None: not priced), with where each came from."""

    gpu: float | None = None
    cpu: float | None = None
    gpu_key: str | None = None
    cpu_key: str | None = None

    @property
    def priced(self) -> bool:
        return self.gpu is not None or self.cpu is not None

    def usd(self, gpu_hours: float, cpu_hours: float) -> float | None:
        """The cost of these hours, or None when neither is priced."""
        if not self.priced:
            return None
        return gpu_hours * (self.gpu or 0.0) + cpu_hours * (self.cpu or 0.0)

    def describe(self) -> str:
        parts = [
            f"{what} {key + ' = ' if key else ''}${price:.4g}/{what}-hour"
            for what, key, price in (("GPU", self.gpu_key, self.gpu), ("CPU", self.cpu_key, self.cpu))
            if price is not None
        ]
        return ", ".join(parts) or "no prices"

    def as_dict(self) -> dict:
        return {"gpu": self.gpu, "cpu": self.cpu, "gpu_key": self.gpu_key, "cpu_key": self.cpu_key}

    def with_gpu_price(self, key: str | None) -> Prices:
        """These prices with the GPU's replaced by `--gpu-price KEY` (unchanged without one); an
        unknown key is a one-line error."""
        if key is None:
            return self
        value, key = price_of(key, "gpu", "--gpu-price")
        return Prices(value, self.cpu, key, self.cpu_key)


NO_PRICES = Prices()


def load_prices(path: Path = PRICES, kind: str = "gpu") -> dict[str, float]:
    """Prices per hour by key (USD) of one kind, `gpu` or `cpu`; see cluster/prices.yaml."""
    if not path.exists():
        return {}
    section = SECTIONS[kind]
    prices = load_yaml(path).data.get(section) or {}
    bad = [k for k, v in prices.items() if not isinstance(v, (int, float)) or v < 0]
    if bad:
        raise UserError(Problem(str(path), f"{section}.{bad[0]}: expected a price >= 0"))
    return {k: float(v) for k, v in prices.items()}


def price_of(value: str | float | None, kind: str, where: str) -> tuple[float | None, str | None]:
    """(USD per hour, key) of a price given as a key of cluster/prices.yaml or as a number;
    an unknown key is a one-line error naming `where` and the valid keys."""
    if value is None:
        return None, None
    if isinstance(value, (int, float)):
        return float(value), None
    prices = load_prices(kind=kind)
    if value not in prices:
        raise UserError(
            Problem(
                where,
                f"unknown {kind.upper()} price {value!r}; cluster/prices.yaml ({SECTIONS[kind]}) has: "
                f"{', '.join(prices) or '(none)'}",
            )
        )
    return prices[value], value
