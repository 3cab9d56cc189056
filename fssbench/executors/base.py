"""What every executor shares: the interface, and the driver loop of the cluster executors.

An executor gets the graph (``fssbench.executors.graph``) and a callback for each finished task;
it decides only *where* tasks run. Result files are written by the tasks themselves, into the
results folder, exactly as the local executor writes them (the folder must be shared with the
cluster's nodes: a network file system on SLURM, the same machine for a local Ray).

The cluster executors (Ray, SLURM) drive the graph from this process: submit every task whose
dependencies are finished, wait for one to finish, submit what it unblocked. ``fssbench run`` stays
in the foreground with its progress bars; killed, it leaves the finished files, and the same command
continues (a task that was running is run again; a finished one never).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from fssbench.errors import UserError
from fssbench.executors.graph import Graph, Task
from fssbench.executors.task import TaskRef
from fssbench.workspace import Workspace


@dataclass
class ExecutionContext:
    """What an executor is handed to run a graph (never the runner itself)."""

    workspace: Workspace
    """This process's resources: the local executor runs its tasks with them."""
    prog: Any
    """The progress display (``add_task`` / ``advance`` / ``remove_task``)."""
    say: Callable[[str], None]
    """Where a task's one-line messages go."""
    workers: int
    """Tasks at once on this machine (CPU workers; Ray's CPUs and submitit's local jobs by default)."""
    device_request: str
    """The device a remote task asks for (``auto`` stays ``auto``: its node decides)."""


class Executor(Protocol):
    name: str

    def check(self) -> None:
        """Raise a one-line ``UserError`` if this executor cannot run here (called before any work)."""

    def run(self, ctx: ExecutionContext, graph: Graph, on_done: Callable[[Task], None]) -> None:
        """Run every task of ``graph`` (dependencies first); ``on_done(task)`` in this process as
        each finishes."""


def task_ref(ctx: ExecutionContext, task: Task) -> TaskRef:
    """What a fresh process needs to run ``task`` (``fssbench.executors.task``)."""
    ws = ctx.workspace
    source = ws.suite.source
    if source is None or not source.is_file():
        raise UserError("a cluster executor needs the suite as a file (its tasks load it); pass a suite YAML path")
    return TaskRef(
        suite_file=str(source.resolve()),
        profile=ws.suite.profile,
        results_dir=str(ws.out.resolve()),
        device=ctx.device_request,
        weights_dir=None if ws.weights_dir is None else str(ws.weights_dir),
        task_id=task.task_id,
        gpus=task.resources.gpus,
    )


def drive(
    ctx: ExecutionContext,
    graph: Graph,
    on_done: Callable[[Task], None],
    submit: Callable[[Task], Any],
    wait_one: Callable[[list[Any], float], list[Any]],
    result: Callable[[Any], list[str]],
    failure: Callable[[Task, Any, BaseException], str],
    cancel: Callable[[list[Any]], None],
    max_in_flight: int | None = None,
) -> None:
    """Submit ready tasks (at most ``max_in_flight`` at once), collect finished ones, repeat.

    ``wait_one(handles, timeout)`` returns the finished handles among ``handles`` (possibly none);
    ``result(handle)`` returns the task's messages or raises its error; ``failure`` turns that
    error into one line; ``cancel`` stops handles still running after a failure or Ctrl-C."""
    order = graph.order()
    finished: set[str] = set()
    pending = list(order)
    running: dict[Any, Task] = {}
    bar = ctx.prog.add_task("tasks", total=len(order))
    try:
        while pending or running:
            ready = [t for t in pending if all(d in finished for d in t.deps)]
            for t in ready:
                if max_in_flight is not None and len(running) >= max_in_flight:
                    break
                running[submit(t)] = t
                pending.remove(t)
            if not running:
                missing = sorted({d for t in pending for d in t.deps} - finished - {t.task_id for t in order})
                raise RuntimeError(f"tasks wait on tasks that are not in the graph: {missing}")
            for h in wait_one(list(running), 0.5):
                t = running.pop(h)
                try:
                    messages = result(h)
                except Exception as exc:  # noqa: BLE001 - reported as one line, the rest cancelled
                    cancel(list(running))
                    raise UserError(failure(t, h, exc)) from None
                for m in messages:
                    ctx.say(m)
                finished.add(t.task_id)
                on_done(t)
                ctx.prog.advance(bar)
    except KeyboardInterrupt:
        cancel(list(running))
        raise
    finally:
        ctx.prog.remove_task(bar)


def last_line(exc: BaseException) -> str:
    """The one line that says what went wrong in a remote task."""
    text = str(exc).strip().splitlines()
    lines = [ln.strip() for ln in text if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def poll(handles: list[Any], is_done: Callable[[Any], bool], timeout: float) -> list[Any]:
    """Handles that are done, waiting up to ``timeout`` seconds for the first one."""
    end = time.monotonic() + timeout
    while True:
        done = [h for h in handles if is_done(h)]
        if done or time.monotonic() >= end:
            return done
        time.sleep(0.05)


__all__ = ["ExecutionContext", "Executor", "drive", "last_line", "poll", "task_ref"]
