"""The Ray executor: each task a Ray task with the CPUs, GPUs and memory it declares.

``fssbench run SUITE --executor ray`` starts a local Ray instance (this machine's cores and GPUs);
``--ray-address ray://head:10001`` (or ``auto``) joins an existing cluster instead. Workers must see
the repository (an installed fssbench) and the results folder at the same path (a shared file
system, or a single machine). A Ray worker process keeps its suite, dataset and backbones between the
tasks it runs.
"""

from __future__ import annotations

from typing import Any, Callable

from fssbench.errors import UserError
from fssbench.executors.base import ExecutionContext, drive, last_line, task_ref
from fssbench.executors.graph import Graph, Task


def _remote_entry(ref: Any) -> list[str]:
    from fssbench.executors.task import run_ref

    return run_ref(ref)


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.address, self.num_cpus = address, num_cpus

    def check(self) -> None:
        """Before any work: Ray is installed."""
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UserError("--executor ray needs Ray: pip install -e '.[cluster]' (or pip install ray)") from None

    def run(self, ctx: ExecutionContext, graph: Graph, on_done: Callable[[Task], None]) -> None:
        self.check()
        import ray
        started_here = not ray.is_initialized()
        if started_here:
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if self.address:
                kw["address"] = self.address
            else:
                kw["num_cpus"] = self.num_cpus or ctx.workers
            try:
                ray.init(**kw)
            except ConnectionError as exc:
                raise UserError(f"cannot reach the Ray cluster at {self.address}: {last_line(exc)}; check --ray-address") from None
        remote = ray.remote(_remote_entry)
        refs: dict[Any, Task] = {}

        def submit(t: Task) -> Any:
            res = t.resources
            opts: dict[str, Any] = {"num_cpus": res.cpus, "num_gpus": res.gpus, "name": t.name, "max_retries": 0}
            if res.mem_gb:
                opts["memory"] = int(res.mem_gb * 2**30)
            h = remote.options(**opts).remote(task_ref(ctx, t))
            refs[h] = t
            return h

        def wait_one(handles: list[Any], timeout: float) -> list[Any]:
            done, _ = ray.wait(handles, num_returns=1, timeout=timeout)
            return done

        def failure(t: Task, h: Any, exc: BaseException) -> str:
            cause = getattr(exc, "cause", None) or exc
            return f"task {t.task_id} failed on Ray: {last_line(cause)}; finished tasks are kept, fix it and run the same command again"

        def cancel(handles: list[Any]) -> None:
            for h in handles:
                ray.cancel(h, force=True)

        try:
            drive(ctx, graph, on_done, submit, wait_one, ray.get, failure, cancel)
        finally:
            if started_here:
                ray.shutdown()


__all__ = ["RayExecutor"]
