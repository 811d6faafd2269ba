"""The diagnostic files of a `multitask_span` trial (names and columns of the seed's baseline
protocol), written one epoch at a time, its training log, plots and success criteria
(`diagnostics.json`).

Tables grow by appending one epoch's rows, so they can be read while the trial runs (the seed
rsynced partial CSVs); the rows are also kept in memory and in the trial's checkpoint, and a
resumed trial rewrites the files from there, so a file never holds epochs the model forgot.

| file | columns |
|---|---|
| epoch_metrics.csv | epoch, train_loss, val_loss, span_f1, span_precision, span_recall, epoch_time |
| loss_components.csv | epoch, phase, loss_type, loss_ptr, loss_span, loss_countdown, total_loss |
| uncertainty_params.csv | epoch, sigma_<task>..., weight_<task>... (weight = effective share, sums to 1) |
| probability_stats.csv | epoch, phase, in_span_mean, in_span_std, out_span_mean, out_span_std, separation |
| feature_stats.csv | epoch, phase, feature_name, mean, std, min, max, median (epoch 1 only: the inputs are fixed) |
| gradient_stats.csv | epoch, total_grad_norm, then one column per parameter (its gradient's L2 norm) |
| threshold_sweep.csv | threshold, span_precision, span_recall, span_f1 (validation, best model) |

`train_loss` / `val_loss` and `total_loss` are the optimised objective (uncertainty-weighted,
or fixed-weighted); the `loss_*` columns are the unweighted task losses.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import torch

from trainables.configs.multitask_span import TASKS
from trainables.data.span_features import FEATURES
from trainables.runtime.session import write_json

TABLES = {
    "epoch_metrics.csv": ["epoch", "train_loss", "val_loss", "span_f1", "span_precision", "span_recall", "epoch_time"],
    "loss_components.csv": ["epoch", "phase", "loss_type", "loss_ptr", "loss_span", "loss_countdown", "total_loss"],
    "uncertainty_params.csv": ["epoch"] + [f"sigma_{t}" for t in TASKS] + [f"weight_{t}" for t in TASKS],
    "probability_stats.csv": [
        "epoch",
        "phase",
        "in_span_mean",
        "in_span_std",
        "out_span_mean",
        "out_span_std",
        "separation",
    ],
    "feature_stats.csv": ["epoch", "phase", "feature_name", "mean", "std", "min", "max", "median"],
    "gradient_stats.csv": None,  # epoch, total_grad_norm, <parameter names>: known when the model exists
}
LOG_FILE = "training.log"
DIAGNOSTICS_FILE = "diagnostics.json"


class DiagnosticLog:
    """Appends rows to the trial's CSV tables and lines to its training log."""

    def __init__(self, folder: Path, gradient_columns: list[str]):
        self.folder = folder
        self.columns = dict(TABLES, **{"gradient_stats.csv": ["epoch", "total_grad_norm", *gradient_columns]})
        self.rows: dict[str, list[dict]] = {name: [] for name in self.columns}
        self.lines: list[str] = []
        self.seconds = 0.0  # time spent writing diagnostics (the bench reports its share)

    def add(self, table: str, rows: list[dict]) -> None:
        t0 = time.perf_counter()
        path = self.folder / table
        new = not self.rows[table] or not path.exists()
        with open(path, "w" if new else "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns[table], extrasaction="raise")
            if new:
                writer.writeheader()
                writer.writerows(self.rows[table])
            writer.writerows(rows)
        self.rows[table].extend(rows)
        self.seconds += time.perf_counter() - t0

    def log(self, line: str) -> None:
        stamped = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}"
        with open(self.folder / LOG_FILE, "a") as f:
            f.write(stamped + "\n")
        self.lines.append(stamped)

    def state_dict(self) -> dict:
        return {"rows": self.rows, "lines": self.lines}

    def load_state_dict(self, state: dict) -> None:
        """Rewrite every file from a checkpoint's rows (drops epochs after that checkpoint)."""
        self.rows = {name: list(state["rows"].get(name, [])) for name in self.columns}
        self.lines = list(state["lines"])
        for table, rows in self.rows.items():
            with open(self.folder / table, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.columns[table])
                writer.writeheader()
                writer.writerows(rows)
        (self.folder / LOG_FILE).write_text("".join(line + "\n" for line in self.lines))


# Success criteria of the seed's baseline protocol: (level, metric, comparison, target).
CRITERIA = [
    ("minimum", "val_loss_reduction", ">=", 0.20),
    ("minimum", "span_f1", ">", 0.0),
    ("strong", "val_loss_reduction", ">=", 0.30),
    ("strong", "span_f1", ">", 0.30),
    ("strong", "separation", ">", 0.10),
    ("exceptional", "val_loss_reduction", ">=", 0.40),
    ("exceptional", "span_f1", ">", 0.45),
    ("exceptional", "separation", ">", 0.15),
]


def criteria(values: dict[str, float]) -> list[dict]:
    """Pass/fail lines of the seed's criteria for the measured `values`."""
    out = []
    for level, metric, op, target in CRITERIA:
        value = values.get(metric)
        passed = value is not None and (value >= target if op == ">=" else value > target)
        out.append(
            {"level": level, "metric": metric, "condition": f"{op} {target:g}", "value": value, "passed": bool(passed)}
        )
    return out


def write_epoch(diag: DiagnosticLog, epoch: int, m: dict, raw_by_phase: dict[str, torch.Tensor]) -> None:
    """One epoch's rows of the diagnostic tables, from the epoch's measurements `m`; the input
    features' statistics (`raw_by_phase`: unstandardised features of train and val) at epoch 1."""
    diag.add(
        "epoch_metrics.csv",
        [
            {
                "epoch": epoch,
                "train_loss": m["train_loss"],
                "val_loss": m["val_loss"],
                **m["at"],
                "epoch_time": m["epoch_time"],
            }
        ],
    )
    diag.add(
        "loss_components.csv",
        [
            {"epoch": epoch, "phase": phase, **{f"loss_{t}": v for t, v in zip(TASKS, comps)}, "total_loss": total}
            for phase, comps, total in (
                ("train", m["train_components"], m["train_loss"]),
                ("val", m["val_components"], m["val_loss"]),
            )
        ],
    )
    diag.add(
        "uncertainty_params.csv",
        [
            {
                "epoch": epoch,
                **{f"sigma_{t}": s for t, s in zip(TASKS, m["sigmas"])},
                **{f"weight_{t}": w for t, w in zip(TASKS, m["shares"])},
            }
        ],
    )
    diag.add(
        "probability_stats.csv",
        [{"epoch": epoch, "phase": "train", **m["train_stats"]}, {"epoch": epoch, "phase": "val", **m["val_stats"]}],
    )
    if epoch == 1:  # the inputs are fixed: their statistics are the same at every epoch
        diag.add("feature_stats.csv", _feature_rows(epoch, raw_by_phase))
    if m["grad_row"] is not None:
        diag.add("gradient_stats.csv", [dict(zip(diag.columns["gradient_stats.csv"], [epoch, *m["grad_row"]]))])


def _feature_rows(epoch: int, raw_by_phase: dict[str, torch.Tensor]) -> list[dict]:
    rows = []
    for phase, x in raw_by_phase.items():
        flat = x.reshape(-1, x.shape[-1])
        stats = torch.stack([flat.mean(0), flat.std(0), flat.amin(0), flat.amax(0), flat.median(0).values]).T.tolist()
        rows += [
            {
                "epoch": epoch,
                "phase": phase,
                "feature_name": name,
                "mean": s[0],
                "std": s[1],
                "min": s[2],
                "max": s[3],
                "median": s[4],
            }
            for name, s in zip(FEATURES, stats)
        ]
    return rows


def write_summary(
    diag: DiagnosticLog, best_epoch: int | None, out: dict, figures: list[str], n_test: int
) -> list[dict]:
    """The seed's success criteria, judged, into diagnostics.json with the final scores `out`
    (`n_test` windows in the test block); the criteria."""
    task_loss = [sum(r[f"loss_{t}"] for t in TASKS) for r in diag.rows["loss_components.csv"] if r["phase"] == "val"]
    reduction = (task_loss[0] - min(task_loss)) / task_loss[0] if task_loss and task_loss[0] > 0 else None
    # The criteria judge the scores of windows that chose nothing (the test block) when there is
    # one; validation chose the threshold and the best epoch, so its scores are optimistic.
    scored = "test" if n_test else "val"
    lines = criteria(
        {
            "val_loss_reduction": reduction,
            "span_f1": out[f"final/{scored}_span_f1"],
            "separation": out[f"final/{scored}_separation"],
        }
    )
    on_what = (
        f"span F1 and separation are of the {n_test} test windows, at that threshold."
        if scored == "test"
        else "there is no test block (test_fraction 0, or too few windows), "
        "so span F1 and separation are of the validation windows themselves: optimistic."
    )
    write_json(
        {
            "trainable": "multitask_span",
            "epochs": len(diag.rows["epoch_metrics.csv"]),
            "best_epoch": best_epoch,
            "val_task_loss_first": task_loss[0] if task_loss else None,
            "val_task_loss_best": min(task_loss) if task_loss else None,
            "val_loss_reduction": reduction,
            "final": out,
            "criteria": lines,
            "figures": figures,
            "scored_on": scored,
            "notes": "val_loss_reduction uses the unweighted sum of validation task losses (first epoch vs "
            "best). The threshold and the best epoch were chosen on the validation windows; " + on_what,
        },
        diag.folder / DIAGNOSTICS_FILE,
    )
    return lines


def plot_all(folder: Path, log: DiagnosticLog, val_probs, val_truth) -> list[str]:
    """Loss curves, loss components, span F1, sigma/weights, span-probability histogram (PNG);
    the names of the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    em = pd.DataFrame(log.rows["epoch_metrics.csv"])
    if em.empty:
        return []
    plots = {
        "loss_curves.png": lambda: _loss_curves(plt, em),
        "loss_components.png": lambda: _loss_components(plt, pd.DataFrame(log.rows["loss_components.csv"])),
        "span_f1.png": lambda: _span_metrics(plt, em),
        "uncertainty.png": lambda: _uncertainty(plt, pd.DataFrame(log.rows["uncertainty_params.csv"])),
        "span_probabilities.png": lambda: _probabilities(plt, val_probs, val_truth),
    }
    for name, plot in plots.items():
        fig = plot()
        fig.tight_layout()
        fig.savefig(folder / name, dpi=90)
        plt.close(fig)
    return list(plots)


def _loss_curves(plt, em):
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(em["epoch"], em["train_loss"], label="train")
    ax.plot(em["epoch"], em["val_loss"], label="val")
    ax.set(xlabel="epoch", ylabel="objective", title="Loss")
    ax.legend()
    return fig


def _loss_components(plt, lc):
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, phase in zip(axes, ("train", "val")):
        part = lc[lc["phase"] == phase]
        for col in ("loss_type", "loss_ptr", "loss_span", "loss_countdown"):
            ax.plot(part["epoch"], part[col], label=col[5:])
        ax.set(xlabel="epoch", title=f"Task losses ({phase})", yscale="log")
    axes[0].legend()
    return fig


def _span_metrics(plt, em):
    fig, ax = plt.subplots(figsize=(6, 4))
    for col in ("span_f1", "span_precision", "span_recall"):
        ax.plot(em["epoch"], em[col], label=col)
    ax.set(xlabel="epoch", ylim=(0, 1), title="Span metrics (val, threshold of the config)")
    ax.legend()
    return fig


def _uncertainty(plt, up):
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for task in TASKS:
        axes[0].plot(up["epoch"], up[f"sigma_{task}"], label=task)
        axes[1].plot(up["epoch"], up[f"weight_{task}"], label=task)
    axes[0].set(xlabel="epoch", title="sigma per task")
    axes[1].set(xlabel="epoch", title="effective weight share", ylim=(0, 1))
    axes[0].legend()
    return fig


def _probabilities(plt, val_probs, val_truth):
    inside = val_truth.bool()
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = [i / 40 for i in range(41)]
    ax.hist(val_probs[~inside].cpu().numpy(), bins=bins, alpha=0.6, density=True, label="out of span")
    ax.hist(val_probs[inside].cpu().numpy(), bins=bins, alpha=0.6, density=True, label="in span")
    ax.set(xlabel="span probability", title="Span probabilities (val, best model)")
    ax.legend()
    return fig
