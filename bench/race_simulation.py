"""The race's decision rule on synthetic learning curves, without Ray: how often it eliminates the
truly best group, and how many trial-epochs it saves (README: *Racing over seeds*).

Each simulated study has `groups` groups x `seeds` seeds of a loss curve over `epochs` epochs:

    y[g, s, e] = 3 exp(-e / 15) + gap[g] + u[s] + v[g, s] + noise[g, s, e]

- `u[s]` ~ N(0, shared): the seed's effect, the same in every group (a seed's data order and
  initialisation help or hurt every variant alike), so that pairing by seed matters;
- `v[g, s]` ~ N(0, 1 - shared): the seed noise of one trial; a group's value over seeds has
  standard deviation 1 (the *seed sd*: gaps are given in it);
- `noise` ~ N(0, 0.3) per epoch; the race reads the best value so far (what `select` reads);
- `gap[0] = 0` (the truly best group), `gap[g] = gap` for the others.

Every trial runs at once (the cluster holds them all), so each rung sees every seed. The rule is
the one a raced stage runs (`orchestrator.planning.race_rule.decide` at `rung_level`), and, for
comparison, the same Holm test at `alpha` on every rung (`--plain`), which looks at the data once
per rung without paying for it.

    python bench/race_simulation.py                 # the table in bench/README.md (about 2 minutes)
    python bench/race_simulation.py --studies 200   # quicker, noisier
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.planning import race_rule  # noqa: E402


def curves(rng, groups: int, seeds: int, epochs: int, gap: float, shared: float) -> np.ndarray:
    """Best-so-far loss curves, shape (groups, seeds, epochs)."""
    e = np.arange(1, epochs + 1)
    means = np.full(groups, gap)
    means[0] = 0.0
    u = rng.normal(0.0, math.sqrt(shared), seeds)
    v = rng.normal(0.0, math.sqrt(1.0 - shared), (groups, seeds))
    y = 3 * np.exp(-e / 15)[None, None, :] + means[:, None, None] + u[None, :, None] + v[:, :, None]
    y = y + rng.normal(0.0, 0.3, (groups, seeds, epochs))
    return np.minimum.accumulate(y, axis=2)


def race(best_so_far: np.ndarray, first: int, factor: float, alpha: float, test: str, plain: bool):
    """(was group 0 eliminated, fraction of trial-epochs saved, groups eliminated)."""
    groups, seeds, epochs = best_so_far.shape
    stopped = np.full(groups, epochs)
    alive = set(range(groups))
    for k, rung in enumerate(race_rule.rungs(first, factor, epochs - 1), start=1):
        values = {g: {s: float(best_so_far[g, s, rung - 1]) for s in range(seeds)} for g in sorted(alive)}
        level = alpha if plain else race_rule.rung_level(alpha, k)
        _, rows = race_rule.decide(values, "min", level, min_seeds=seeds, test=test)
        for row in rows:
            if row.eliminated:
                alive.discard(row.group)
                stopped[row.group] = rung
        if len(alive) == 1:
            break
    return 0 not in alive, 1.0 - stopped.sum() / (groups * epochs), groups - len(alive)


def simulate(studies: int, case: tuple, gap: float, args, seed: int) -> dict:
    """`studies` simulated races of `case` = (groups, seeds, shared) with this gap."""
    groups, seeds, shared = case
    rng = np.random.default_rng(seed)
    rule = (args.first, args.factor, args.alpha, args.test, args.plain)
    runs = [race(curves(rng, groups, seeds, args.epochs, gap, shared), *rule) for _ in range(studies)]
    out = np.array(runs, dtype=float)
    lost = int(out[:, 0].sum())
    return {
        "best_eliminated": lost / studies,
        "upper95": float(stats.beta.ppf(0.95, lost + 1, studies - lost)) if lost < studies else 1.0,
        "saved": float(out[:, 1].mean()),
        "eliminated": float(out[:, 2].mean()),
    }


CASES = [  # (groups, seeds, shared)
    (2, 5, 0.7),
    (4, 3, 0.7),
    (4, 5, 0.7),
    (4, 5, 0.85),
    (4, 8, 0.7),
    (8, 5, 0.7),
]
GAPS = (0.0, 0.25, 0.5, 1.0, 2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--first", type=int, default=10)
    parser.add_argument("--factor", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--test", choices=("t", "wilcoxon"), default="t")
    parser.add_argument("--plain", action="store_true", help="every rung at alpha (no spending over rungs)")
    args = parser.parse_args()
    started = time.perf_counter()
    rule = "Holm at alpha on every rung" if args.plain else "Holm at alpha/(zeta(3) k^3) on rung k"
    print(
        f"{args.studies} studies per row; {args.epochs} epochs, "
        f"rungs {race_rule.rungs(args.first, args.factor, args.epochs - 1)}; alpha {args.alpha}, "
        f"{args.test}-test, {rule}; min_seeds = seeds\n"
    )
    print(
        "| groups | seeds | shared | gap (seed sd) | truly best eliminated (95% upper) "
        "| trial-epochs saved | groups eliminated |"
    )
    print("|---|---|---|---|---|---|---|")
    for i, (groups, seeds, shared) in enumerate(CASES):
        for j, gap in enumerate(GAPS):
            r = simulate(args.studies, (groups, seeds, shared), gap, args, seed=1000 * i + j)
            print(
                f"| {groups} | {seeds} | {shared} | {gap:g} | {r['best_eliminated']:.3f} ({r['upper95']:.3f}) "
                f"| {r['saved']:.0%} | {r['eliminated']:.2f} of {groups - 1} |",
                flush=True,
            )
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
