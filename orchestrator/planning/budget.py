"""The spend cap, `budget: {usd, gpu_hours, gpu_price, cpu_price}`: what it is, what a study has
spent against it, and whether a study's estimate already exceeds it.

Spend is trial wall time x resources x price, summed over every trial of every stage and every
run of the study: a trial's `gpu_s` and `cpu_s` (its record, `orchestrator.execution.recorder`)
are its wall time as the driver measured it from start to end of each attempt, times the GPUs
and CPUs it held, never less than Tune's own `time_total_s`. Work repeated after an interruption
is counted again, as it was paid again. That is what a cluster bills while the trials run, not
the cluster's idle time between them (a head node, a node waiting to scale down): keep a margin.

The cap in force is written to `_orchestrator/budget.json` with its prices when a run starts, so
that `status`, `results` and `report` show spent against cap and `resume` continues with it
(`resume --budget USD` replaces it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from orchestrator.errors import Problem, UserError
from orchestrator.planning.costs import NO_PRICES, Prices, price_of
from orchestrator.planning.expand import Plan
from orchestrator.planning.resources import trial_charge
from orchestrator.storage.records import ENDED_STATUSES, STATE_DIR, read_json
from orchestrator.storage.store import Store
from orchestrator.study.schema import Budget

BUDGET_FILE = "budget.json"


@dataclass(frozen=True)
class Spend:
    """GPU- and CPU-hours used."""

    gpu_hours: float = 0.0
    cpu_hours: float = 0.0

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.gpu_hours + other.gpu_hours, self.cpu_hours + other.cpu_hours)

    def scaled(self, factor: float) -> Spend:
        return Spend(self.gpu_hours * factor, self.cpu_hours * factor)

    def __sub__(self, other: Spend) -> Spend:
        return Spend(max(self.gpu_hours - other.gpu_hours, 0.0), max(self.cpu_hours - other.cpu_hours, 0.0))


@dataclass(frozen=True)
class Cap:
    """The spend cap in force and the prices that turn hours into money."""

    usd: float | None
    gpu_hours: float | None
    prices: Prices

    def describe(self) -> str:
        parts = [f"${self.usd:,.2f}" if self.usd is not None else None]
        parts.append(f"{self.gpu_hours:g} GPU-hours" if self.gpu_hours is not None else None)
        return " and ".join(p for p in parts if p)

    def spent_text(self, spend: Spend) -> str:
        """`$12.30 of $250.00, 3.0 of 200 GPU-hours`: spent against each cap."""
        parts = []
        if self.usd is not None:
            parts.append(f"${self.prices.usd(spend.gpu_hours, spend.cpu_hours) or 0.0:,.2f} of ${self.usd:,.2f}")
        if self.gpu_hours is not None:
            parts.append(f"{spend.gpu_hours:.3g} of {self.gpu_hours:g} GPU-hours")
        return ", ".join(parts)

    def exceeded_by(self, spend: Spend, *, reached: bool = True) -> str | None:
        """Which cap `spend` reaches (`$251.20 >= the $250.00 cap`), or None; with
        `reached=False`, which cap it goes beyond (an estimate may use the whole cap)."""
        usd = self.prices.usd(spend.gpu_hours, spend.cpu_hours)
        op = ">=" if reached else ">"

        def beyond(value: float, limit: float) -> bool:
            return value >= limit if reached else value > limit

        if self.usd is not None and usd is not None and beyond(usd, self.usd):
            return f"${usd:,.2f} {op} the ${self.usd:,.2f} cap"
        if self.gpu_hours is not None and beyond(spend.gpu_hours, self.gpu_hours):
            return f"{spend.gpu_hours:.3g} GPU-hours {op} the {self.gpu_hours:g} GPU-hour cap"
        return None

    def as_dict(self) -> dict:
        return {"usd": self.usd, "gpu_hours": self.gpu_hours, "prices": self.prices.as_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> Cap:
        return cls(data.get("usd"), data.get("gpu_hours"), Prices(**data.get("prices", {})))


def trial_spend(trial: dict) -> Spend:
    return Spend((trial.get("gpu_s") or 0.0) / 3600, (trial.get("cpu_s") or 0.0) / 3600)


def spend_of(trials: Iterable[dict]) -> Spend:
    """What these trial records used."""
    total = Spend()
    for t in trials:
        total = total + trial_spend(t)
    return total


def study_spend(records: Iterable[dict | None]) -> Spend:
    """What every trial of these stage records used."""
    return spend_of(t for r in records if r for t in r.get("trials", {}).values())


def spent_so_far(store: Store, records: dict[str, dict | None]) -> Spend:
    """What the study has spent in every run before this one: its stage records, or what the last
    run's budget file says if that is more (a driver killed between two saves of a record had
    already written the spend of those seconds to the budget file, which it saves more often)."""
    return _larger(study_spend(records.values()), (read_budget(store) or {}).get("spent") or {})


def _larger(recorded: Spend, filed: dict) -> Spend:
    """Per kind of hours, the larger of the records' spend and a budget file's `spent`."""
    return Spend(
        max(recorded.gpu_hours, float(filed.get("gpu_hours") or 0.0)),
        max(recorded.cpu_hours, float(filed.get("cpu_hours") or 0.0)),
    )


def cap_of(
    budget: Budget | None,
    where: str,
    *,
    gpu_price: str | None = None,
    usd: float | None = None,
    gpu_hours: float | None = None,
    stored: Cap | None = None,
    uses_gpus: bool = False,
) -> Cap | None:
    """The cap in force: `usd` / `gpu_hours` given on the command line, else the stored cap
    (`stored`, for `resume`), else the study file's `budget`; prices from `--gpu-price`, else
    the budget's. None without any cap. A USD cap without a price, or without a GPU price on a
    study whose trials use GPUs (`uses_gpus`: its GPU time would cost nothing), is a one-line
    error."""
    if budget is None and stored is None and usd is None and gpu_hours is None:
        return None
    base = stored or (
        Cap(
            budget.usd,
            budget.gpu_hours,
            _prices(budget.gpu_price, budget.cpu_price, where),
        )
        if budget is not None
        else Cap(None, None, NO_PRICES)
    )
    prices = base.prices.with_gpu_price(gpu_price)
    cap = Cap(usd if usd is not None else base.usd, gpu_hours if gpu_hours is not None else base.gpu_hours, prices)
    if cap.usd is not None and not prices.priced:
        raise UserError(
            Problem(
                where,
                "a USD cap needs a price: budget.gpu_price (a key of cluster/prices.yaml or USD per GPU-hour), "
                "budget.cpu_price, or --gpu-price KEY",
                "budget.usd",
            )
        )
    if cap.usd is not None and uses_gpus and prices.gpu is None:
        raise UserError(
            Problem(
                where,
                "a USD cap on a study whose trials use GPUs needs a GPU price (else its GPU time would cost "
                "nothing): budget.gpu_price (a key of cluster/prices.yaml or USD per GPU-hour), or --gpu-price KEY",
                "budget.gpu_price",
            )
        )
    return cap


def uses_gpus(plan: Plan) -> bool:
    """Whether any trial of the study asks for GPUs: its own, its data-parallel workers', or
    those of the actors it starts (as written in the study file, whatever this machine has)."""
    for sp in plan.stages.values():
        if sp.resources.gpu > 0:
            return True
        declared = {"cpu": sp.resources.cpu, "gpu": 0.0}
        if any(trial_charge(declared, sp.trainable, t.config)["gpu"] > 0 for t in sp.trials):
            return True
    return False


def _prices(gpu: str | float | None, cpu: str | float | None, where: str) -> Prices:
    gpu_value, gpu_key = price_of(gpu, "gpu", f"{where}: budget.gpu_price")
    cpu_value, cpu_key = price_of(cpu, "cpu", f"{where}: budget.cpu_price")
    return Prices(gpu_value, cpu_value, gpu_key, cpu_key)


def read_budget(store: Store) -> dict | None:
    """The study's budget file (cap, spent, text, stopped), or None. `status` reads `text` from
    it: while a study runs its stage records are not yet written, the budget file is."""
    if not store.exists(STATE_DIR, BUDGET_FILE):
        return None
    return read_json(store, STATE_DIR, BUDGET_FILE)


def load_cap(store: Store) -> Cap | None:
    """The cap stored with the study by its last run, or None."""
    saved = read_budget(store)
    return Cap.from_dict(saved["cap"]) if saved else None


def save_cap(store: Store, cap: Cap, spend: Spend, stopped: str | None = None) -> None:
    """The cap in force, what was spent so far and, once the cap stopped the study, why."""
    data = {
        "cap": cap.as_dict(),
        "spent": {
            "usd": cap.prices.usd(spend.gpu_hours, spend.cpu_hours),
            "gpu_hours": spend.gpu_hours,
            "cpu_hours": spend.cpu_hours,
        },
        "text": cap.spent_text(spend),
        "stopped": stopped,
    }
    store.write_text(json.dumps(data, indent=1), STATE_DIR, BUDGET_FILE)


def over_estimate(cap: Cap, estimate: dict | None, spent: Spend = Spend()) -> str | None:
    """Why spending `spent` and then `estimate` (plan's: gpu_hours, cpu_hours) would cross the
    cap, or None (also when there is no estimate)."""
    if not estimate:
        return None
    total = spent + Spend(estimate["gpu_hours"], estimate.get("cpu_hours", 0.0))
    reached = cap.exceeded_by(total, reached=False)
    if reached is None:
        return None
    already = f" (spent so far: {cap.spent_text(spent)})" if spent.gpu_hours or spent.cpu_hours else ""
    return f"the estimate {reached}{already}"


def remaining_estimate(rows: dict, records: dict[str, dict | None]) -> dict | None:
    """`plan_rows`' estimate of the trials that have not ended yet (each stage's estimate times
    its share of trials left), or None when a stage has no estimate."""
    left = Spend()
    for stage in rows["stages"]:
        estimate = stage["estimate"]
        if not estimate:
            return None
        trials = (records.get(stage["stage"]) or {}).get("trials", {}).values()
        ended = sum(t["status"] in ENDED_STATUSES for t in trials)
        share = max(stage["trials"] - ended, 0) / stage["trials"] if stage["trials"] else 0.0
        left = left + Spend(estimate["gpu_hours"], estimate["cpu_hours"]).scaled(share)
    return {"gpu_hours": left.gpu_hours, "cpu_hours": left.cpu_hours}


def check_start(
    cap: Cap, rows: dict, records: dict[str, dict | None], where: str, over_budget: bool, spent: Spend | None = None
) -> str:
    """Before a run: refuse (one-line error) when the cap is already reached, or when what is
    spent (`spent_so_far`; default: the records') plus the estimate of the trials left would
    cross it (unless `over_budget`); else the line to print."""
    spent = spent if spent is not None else study_spend(records.values())
    reached = cap.exceeded_by(spent)
    if reached:
        raise UserError(
            Problem(
                where,
                f"the study has spent its budget ({reached}); raise the cap to continue: "
                "`resume RUN_DIR --budget USD`, or budget: in the study file",
                "budget",
            )
        )
    estimate = remaining_estimate(rows, records)
    reason = over_estimate(cap, estimate, spent)
    if reason and not over_budget:
        raise UserError(
            Problem(where, f"over budget: {reason}; lower the study or pass --over-budget to run it anyway", "budget")
        )
    text = f"budget: {cap.describe()} ({cap.prices.describe()}); spent so far {cap.spent_text(spent)}"
    if estimate is None:
        return text + "; no estimate (set expected_trial_minutes): the cap is enforced as the trials run"
    usd = cap.prices.usd(estimate["gpu_hours"], estimate["cpu_hours"])
    cost = f"${usd:,.2f}, " if usd is not None else ""
    return (
        text
        + f"; estimate of the rest: {cost}{estimate['gpu_hours']:.3g} GPU-hours"
        + (f" ({reason}: --over-budget)" if reason else "")
    )


def budget_text(saved: dict | None, records: Iterable[dict | None]) -> str | None:
    """`Budget: spent $12.30 of $250.00, 3 of 200 GPU-hours (stopped: ...)` for a study with a
    cap (its budget file, `read_budget`; spend from its stage records, or the budget file's if
    more: see `spent_so_far`), or None."""
    if not saved:
        return None
    cap = Cap.from_dict(saved["cap"])
    spend = _larger(study_spend(records), saved.get("spent") or {})
    text = f"Budget: spent {cap.spent_text(spend)} ({cap.prices.describe()})"
    return text + (f"; stopped by it: {saved['stopped']}" if saved.get("stopped") else "")
