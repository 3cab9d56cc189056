"""``fssbench run``: expand a suite and run what is not finished yet."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.table import Table

from fssbench.console import console, err_console

if TYPE_CHECKING:  # pragma: no cover
    from fssbench.plan import Plan
    from fssbench.runner import SuiteRunner


def run(
    suite_file: Path = typer.Argument(..., help="Suite YAML, e.g. suites/smoke.yaml."),
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help="Profile of the suite (default: its default_profile)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the runs and their status; do no work."),
    only: Optional[str] = typer.Option(
        None, "--only", help="Run a subset: 'key=value,...' (e.g. method=hsnet,fold=0) or a run-id substring."
    ),
    results_dir: Optional[Path] = typer.Option(None, "--results-dir", help="Where results go (default results/<suite>)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda[:N] (default: auto)."),
    workers: Optional[int] = typer.Option(
        None, "--workers", min=1,
        help="CPU tasks run at once, one torch thread each; the numbers do not depend on it (default: one per core, at most 8; $FSSBENCH_WORKERS).",
    ),
    weights_dir: Optional[Path] = typer.Option(
        None, "--weights-dir", help="Folder with backbone weights files (default: $FSSBENCH_WEIGHTS, then library caches)."
    ),
    executor: str = typer.Option("local", "--executor", "-e", help="Where tasks run: local, ray or slurm (README: clusters)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="ray: join this cluster (e.g. auto, ray://head:10001); default: start a local one."),
    cluster: str = typer.Option("slurm", "--cluster", help="slurm: 'slurm' (sbatch) or 'local' (the same jobs as local subprocesses)."),
    max_jobs: Optional[int] = typer.Option(None, "--max-jobs", min=1, help="slurm: jobs in flight at once (default: no limit; --cluster local: --workers)."),
    cpus: Optional[int] = typer.Option(None, "--cpus-per-task", min=1, help="CPUs per task (overrides the suite's resources)."),
    gpus: Optional[int] = typer.Option(None, "--gpus-per-task", min=0, help="GPUs per task; a training with more than 1 runs DDP under torchrun."),
    mem_gb: Optional[float] = typer.Option(None, "--mem-gb", min=0.1, help="Memory per task in GB."),
    time_min: Optional[int] = typer.Option(None, "--time-min", min=1, help="Wall time per task in minutes (slurm)."),
    partition: Optional[str] = typer.Option(None, "--partition", help="SLURM partition."),
    account: Optional[str] = typer.Option(None, "--account", help="SLURM account."),
) -> None:
    """Train each decoder once, evaluate every run of the matrix, write one result file per run."""
    from rich.markup import escape

    from fssbench.executors import get_executor
    from fssbench.runner import SuiteRunner, filter_runs
    from fssbench.suite import load_suite
    from fssbench.workspace import resolve_device

    if device is not None:  # a bad --device is one line before any work, dry run or not
        resolve_device(device, check_available=not dry_run)
    ex = get_executor(executor, ray_address=ray_address, cluster=cluster, max_jobs=max_jobs)
    overrides = {"cpus": cpus, "gpus": gpus, "mem_gb": mem_gb, "time_min": time_min, "partition": partition, "account": account}

    suite = load_suite(suite_file, profile, check_data=not dry_run, weights_dir=weights_dir)
    expanded = suite.expand()
    runs = filter_runs(expanded, only)
    runner = SuiteRunner(
        suite, results_dir, device=device if not dry_run else "cpu", weights_dir=weights_dir, workers=workers,
        executor=ex, resources={k: v for k, v in overrides.items() if v is not None},
    )
    foreign = runner.foreign_results(expanded)
    if foreign:
        err_console.print(
            f"[yellow]note[/]: {len(foreign)} result file(s) in {escape(str(runner.out))} are not runs of this suite and profile "
            f"(an earlier version of it, or another profile), e.g. {escape(foreign[0].name)}; `fssbench report` includes "
            "them: move them away, or use --results-dir",
            highlight=False,
            soft_wrap=True,
        )
    if dry_run:
        plan = runner.plan(runs)
        table = Table(title=escape(f"{suite.name} ({suite.profile or 'base'}): {len(runs)} runs -> {runner.out}"))
        for col in ("run id", "method", "backbone", "fold", "shot", "kind", "seeds", "supports", "decoder", "decoder status", "status"):
            table.add_column(col)
        for r in runs:
            c = r.config
            bb = c.train_backbone if c.train_backbone == c.eval_backbone else f"{c.train_backbone}->{c.eval_backbone}"
            seeds = "/".join(str(c.seeds[k]) for k in ("episodes", "train", "sampling"))
            status = "done" if runner.is_done(r) else "pending"
            cells = (r.run_id, c.label, bb, str(c.fold), str(c.shot), c.kind, seeds, c.supports,
                     r.decoder_id or "-", plan.decoder_status(r), status)
            table.add_row(*(escape(x) for x in cells))
        console.print(table)
        n_dec = len({r.decoder_id for r in runs if r.decoder_id})
        console.print(
            f"{len(plan.pending_evaluations)} of {len(runs)} runs pending; {len(plan.pending_decoders)} of {n_dec} decoders to train",
            highlight=False,
        )
        if executor == "slurm":
            _print_job_scripts(runner, plan, str(device or suite.eval.get("device") or "auto"))
        return
    ex.check()  # a missing Ray / submitit / sbatch is one line before any work
    stats = runner.run(runs)
    console.print(
        f"[bold]{escape(suite.name)}[/]: {stats['evaluated']} evaluated, {stats['skipped']} already done, "
        f"{stats['trained']} decoders trained -> {escape(str(runner.out))}"
    )


def _print_job_scripts(runner: "SuiteRunner", plan: "Plan", device_request: str) -> None:
    """``--executor slurm --dry-run``: the sbatch script of every task that would be submitted
    (the dry run's runner is on the CPU; ``device_request`` is what the jobs would ask for)."""
    scripts = runner.executor.scripts(runner.execution(None, lambda s: None, device_request), runner.graph(plan))
    for text in scripts:
        console.print(text, markup=False, highlight=False, soft_wrap=True)
    console.print(f"{len(scripts)} job(s) would be submitted (nothing was submitted)", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
