"""Study metrics exported through `ray.util.metrics`: they show in the Ray dashboard's Metrics
view (with Prometheus + Grafana set up as Ray documents) and in any Prometheus scrape of a
node's metrics port (`ray start --metrics-export-port`, Ray prefixes the names with `ray_`).

| metric | tags | what |
|---|---|---|
| orchestrator_trials | study, stage, state | trials per state (pending, running, done, error, diverged, ...) |
| orchestrator_epochs_done | study, stage | epochs (or folds) reported, summed over the stage's trials |
| orchestrator_samples_per_second | study, stage | summed `samples_per_s` of the stage's running trials |
| orchestrator_best_metric | study, stage, metric | the stage's best select metric so far |

Set from the driver each time the live status is written (at most every 2 s); Ray exports
them about every 10 s.
"""

from __future__ import annotations

import math

STATES = ("pending", "running", "retrying", "done", "error", "diverged", "interrupted", "eliminated")


class StudyMetrics:
    def __init__(self, study: str):
        from ray.util.metrics import Gauge

        self.study = study
        self.trials = Gauge("orchestrator_trials", "Trials of a stage by state.", tag_keys=("study", "stage", "state"))
        self.epochs = Gauge(
            "orchestrator_epochs_done", "Epochs (or folds) reported by a stage's trials.", tag_keys=("study", "stage")
        )
        self.samples = Gauge(
            "orchestrator_samples_per_second",
            "Summed samples/s of a stage's running trials.",
            tag_keys=("study", "stage"),
        )
        self.best = Gauge(
            "orchestrator_best_metric", "A stage's best select metric so far.", tag_keys=("study", "stage", "metric")
        )

    def update(self, stage: str, trials: dict[str, dict], total: int | None, select: dict | None) -> None:
        tags = {"study": self.study, "stage": stage}
        counts = dict.fromkeys(STATES, 0)
        epochs, samples = 0.0, 0.0
        for t in trials.values():
            counts[t.get("status", "pending")] = counts.get(t.get("status", "pending"), 0) + 1
            m = t.get("metrics") or {}
            progress = m.get("epoch", m.get("fold", t.get("iterations")))
            epochs += float(progress) if isinstance(progress, (int, float)) else 0.0
            if t.get("status") == "running" and isinstance(m.get("samples_per_s"), (int, float)):
                samples += float(m["samples_per_s"])
        if total is not None:
            counts["pending"] += max(total - len(trials), 0)
        for state, n in counts.items():
            self.trials.set(n, tags={**tags, "state": state})
        self.epochs.set(epochs, tags=tags)
        self.samples.set(samples, tags=tags)
        if select:
            scores = [
                t["best"]
                for t in trials.values()
                if isinstance(t.get("best"), (int, float)) and math.isfinite(t["best"])
            ]
            if scores:
                best = min(scores) if select.get("mode") == "min" else max(scores)
                self.best.set(best, tags={**tags, "metric": select["metric"]})


def study_metrics(study: str) -> StudyMetrics | None:
    """Metrics of this study when Ray runs in this process, else None (e.g. `status` without Ray)."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        return StudyMetrics(study)
    except ImportError:
        return None
