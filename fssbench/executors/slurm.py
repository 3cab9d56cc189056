"""The SLURM executor (submitit): one job per task, with the partition, wall time, GPUs, CPUs and
memory the task declares (``resources:`` in the suite, or the command line).

``fssbench run SUITE --executor slurm`` submits to the cluster's ``sbatch``; ``--cluster local`` runs
the same jobs as local subprocesses (submitit's local executor: what the tests use, and a way to try
a suite before a cluster). Job files and logs go to ``<results>/.submitit/``; ``--dry-run`` prints
the ``sbatch`` script of every task that would be submitted, and submits nothing.

The results folder must be on a file system the nodes share. The driver (this process) submits
a task once its dependencies have finished; a job that was pre-empted or killed is simply
submitted again by the next ``fssbench run`` (a training resumes from its ``last.pt``).
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

from fssbench.errors import UserError
from fssbench.executors.base import ExecutionContext, drive, last_line, poll, task_ref
from fssbench.executors.graph import Graph, Resources, Task

CLUSTERS = ("slurm", "local")


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise UserError("--executor slurm needs submitit: pip install -e '.[cluster]' (or pip install submitit)") from None
    return submitit


def slurm_parameters(res: Resources, name: str) -> dict[str, Any]:
    """submitit (AutoExecutor) parameters of one task."""
    p: dict[str, Any] = {"name": name, "timeout_min": res.time_min, "cpus_per_task": res.cpus, "nodes": 1, "tasks_per_node": 1}
    if res.gpus:
        p["gpus_per_node"] = res.gpus
    if res.mem_gb:
        p["mem_gb"] = res.mem_gb
    for k in ("partition", "account", "qos", "constraint"):
        v = getattr(res, k)
        if v:
            p[f"slurm_{k}"] = v
    return p


def job_script(folder: Path, res: Resources, name: str, command: str) -> str:
    """The ``sbatch`` script submitit writes for a task (its ``_make_sbatch_string``)."""
    _submitit()  # a clear line when submitit is missing
    from submitit.slurm.slurm import _make_sbatch_string

    params: dict[str, Any] = {"job_name": name, "time": res.time_min, "cpus_per_task": res.cpus, "nodes": 1, "ntasks_per_node": 1}
    if res.gpus:
        params["gpus_per_node"] = res.gpus
    if res.mem_gb:
        params["mem"] = f"{int(res.mem_gb * 1024)}MB"
    for k in ("partition", "account", "qos", "constraint"):
        if getattr(res, k):
            params[k] = getattr(res, k)
    return _make_sbatch_string(command=command, folder=str(folder / "%j"), **params)


class SlurmExecutor:
    name = "slurm"

    def __init__(self, cluster: str = "slurm", max_jobs: int | None = None) -> None:
        if cluster not in CLUSTERS:
            raise UserError(f"unknown --cluster '{cluster}'; use {' or '.join(CLUSTERS)}")
        self.cluster, self.max_jobs = cluster, max_jobs

    def check(self) -> None:
        """Before any work: submitit is there, and so is sbatch (for a real cluster)."""
        _submitit()
        if self.cluster == "slurm" and shutil.which("sbatch") is None:
            raise UserError("--executor slurm: no sbatch on this machine; run it on the cluster's login node, "
                            "or use --cluster local to run the jobs here")

    def folder(self, ctx: ExecutionContext) -> Path:
        return ctx.workspace.out.resolve() / ".submitit"

    def scripts(self, ctx: ExecutionContext, graph: Graph) -> list[str]:
        """The job script of every task, in submission order (``--dry-run``)."""
        folder = self.folder(ctx)
        out = []
        for t in graph.order():
            ref = task_ref(ctx, t)
            runs = " ".join(shlex.quote(a) for a in [sys.executable, *ref.argv()])
            submit = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(str(folder / '%j'))}"
            after = f"  (after {', '.join(t.deps)})" if t.deps else ""
            out.append(f"# task {t.task_id}{after}\n# the job runs: {runs}\n" + job_script(folder, t.resources, t.name, submit))
        return out

    def run(self, ctx: ExecutionContext, graph: Graph, on_done: Callable[[Task], None]) -> None:
        submitit = _submitit()
        from fssbench.executors.task import run_ref

        self.check()

        folder = self.folder(ctx)
        ex = submitit.AutoExecutor(folder=folder / "%j", cluster=self.cluster)
        limit = self.max_jobs or (ctx.workers if self.cluster == "local" else None)

        def submit(t: Task) -> Any:
            ex.update_parameters(**slurm_parameters(t.resources, t.name))
            return ex.submit(run_ref, task_ref(ctx, t))

        def failure(t: Task, job: Any, exc: BaseException) -> str:
            return (f"task {t.task_id} failed (job {job.job_id}): {last_line(exc)}; its log: {job.paths.stderr}; "
                    "finished tasks are kept, fix it and run the same command again")

        def cancel(jobs: list[Any]) -> None:
            for j in jobs:
                try:
                    j.cancel(check=False)
                except Exception:  # noqa: BLE001 - best effort; a job left running is harmless (idempotent)
                    pass

        drive(ctx, graph, on_done, submit, lambda hs, t: poll(hs, lambda j: j.done(), t), lambda j: j.result(),
              failure, cancel, max_in_flight=limit)


__all__ = ["CLUSTERS", "SlurmExecutor", "job_script", "slurm_parameters"]
