"""Executors: where the tasks of a suite's graph run (``fssbench run SUITE --executor NAME``).

``local`` (this machine), ``ray`` (a local or existing Ray cluster), ``slurm`` (jobs through
submitit; ``--cluster local`` runs them as local subprocesses). All of them run the same tasks
(``fssbench.executors.task``) against the same results folder, so they write the same result
files: same run ids, same numbers.
"""

from __future__ import annotations

from typing import Any

from fssbench.errors import UserError
from fssbench.executors.base import Executor
from fssbench.executors.graph import Graph, Task, build_graph
from fssbench.resources import Resources

EXECUTORS = ("local", "ray", "slurm")


def get_executor(name: str = "local", **options: Any) -> Executor:
    """An executor by name; ``options``: ``ray_address`` / ``num_cpus`` (ray), ``cluster`` /
    ``max_jobs`` (slurm)."""
    if name == "local":
        from fssbench.executors.local import LocalExecutor

        return LocalExecutor()
    if name == "ray":
        from fssbench.executors.ray_executor import RayExecutor

        return RayExecutor(options.get("ray_address"), options.get("num_cpus"))
    if name == "slurm":
        from fssbench.executors.slurm import SlurmExecutor

        return SlurmExecutor(options.get("cluster") or "slurm", options.get("max_jobs"))
    raise UserError(f"unknown executor '{name}'; use {', '.join(EXECUTORS)}")


__all__ = ["EXECUTORS", "Executor", "Graph", "Resources", "Task", "build_graph", "get_executor"]
