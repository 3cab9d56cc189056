"""Running one task of the graph: in this process, in a Ray worker, in a SLURM job, under torchrun.

A remote task gets only ``TaskRef``: the suite file, profile, results folder, device, weights folder
and the task id. It loads the suite itself, finds its run by id and runs it against the shared
results folder, so nothing but a few strings crosses a process or machine boundary, and a SLURM
job script shows exactly what it will run::

    python -m fssbench.executors.task --suite suites/smoke.yaml --profile quick \\
        --results-dir results/smoke --task eval:<run_id>

On the CPU a task runs with one torch thread (``fssbench.workers``), so its numbers are those of the
local executor, bit for bit. A training task that asks for several GPUs re-launches this module under
``torchrun --nproc_per_node=<gpus>``: DDP through the training engine (rank 0 writes the files).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable

from fssbench import work
from fssbench.errors import UserError
from fssbench.executors.graph import Task
from fssbench.plan import is_done, part_file
from fssbench.resources import Resources
from fssbench.suite import Run, load_suite
from fssbench.workers import threads
from fssbench.workspace import Workspace, resolve_device

_WORKSPACES: dict[tuple, tuple[Workspace, list[Run]]] = {}


@dataclass(frozen=True)
class TaskRef:
    """Everything a fresh process needs to run one task (strings only: picklable, printable)."""

    suite_file: str
    profile: str | None
    results_dir: str
    device: str
    weights_dir: str | None
    task_id: str
    gpus: int = 0

    def argv(self) -> list[str]:
        """The command line of ``python -m fssbench.executors.task`` for this task."""
        args = ["-m", "fssbench.executors.task", "--suite", self.suite_file, "--results-dir", self.results_dir,
                "--device", self.device, "--task", self.task_id]
        if self.profile:
            args += ["--profile", self.profile]
        if self.weights_dir:
            args += ["--weights-dir", self.weights_dir]
        return args


class _Silent:
    """A progress display that shows nothing (a remote task's progress is its task's completion)."""

    def add_task(self, *_: Any, **__: Any) -> int:
        return 0

    def advance(self, *_: Any, **__: Any) -> None:
        return None

    def remove_task(self, *_: Any) -> None:
        return None


def is_finished(ws: Workspace, task: Task) -> bool:
    """Whether the task's output is already in the results folder (a finished task is never re-run)."""
    if task.kind == "train":
        return ws.decoder_done(task.decoder_id)
    if task.part is not None:
        return part_file(ws.out, task.run.run_id, *task.part).is_file() or is_done(ws.out, task.run)
    return is_done(ws.out, task.run)


def execute(ws: Workspace, task: Task, prog: Any, say: Callable[[str], None]) -> bool:
    """Run ``task`` with ``ws``'s resources; False when its output was already there."""
    if is_finished(ws, task):
        return False
    if task.kind == "train":
        work.train_decoder(ws, task.decoder_id, task.run, prog, say)
    else:
        work.evaluate_run(ws, task.run, task.part, prog)
    return True


def find_task(runs: list[Run], task_id: str) -> Task:
    """The task ``task_id`` among the suite's runs (its resources are not needed to run it)."""
    kind, _, rest = task_id.partition(":")
    if kind == "train":
        for r in runs:
            if r.decoder_id == rest:
                return Task(task_id, "train", r, Resources(), decoder_id=rest)
    elif kind == "eval":
        run_id, _, part = rest.partition(":")
        for r in runs:
            if r.run_id == run_id:
                p = None
                if part:
                    i, _, n = part.partition("-of-")
                    p = (int(i), int(n))
                return Task(task_id, "eval", r, Resources(), part=p, decoder_id=r.decoder_id)
    raise UserError(f"task '{task_id}' is not a task of this suite; run `fssbench run SUITE --dry-run` to list them")


def _workspace(ref: TaskRef) -> tuple[Workspace, list[Run]]:
    """The workspace and the suite's runs for ``ref`` (one per suite, results folder and device in
    a long-lived worker process, so its dataset and backbones are built once)."""
    device = ref.device
    if device == "auto":
        from fssbench.dispatch import auto_device

        device = auto_device()
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is not None and device.startswith("cuda"):
        device = f"cuda:{int(local_rank)}"
    key = (ref.suite_file, ref.profile, ref.results_dir, device, ref.weights_dir)
    if key not in _WORKSPACES:
        suite = load_suite(ref.suite_file, ref.profile, check_data=False, weights_dir=ref.weights_dir)
        _WORKSPACES[key] = (Workspace(suite, ref.results_dir, resolve_device(device), ref.weights_dir), suite.expand())
    return _WORKSPACES[key]


def run_ref(ref: TaskRef) -> list[str]:
    """Run the task ``ref`` names in this process (or, for a multi-GPU training, under torchrun);
    returns the messages it said (the driver prints them)."""
    said: list[str] = []
    ws, runs = _workspace(ref)
    task = find_task(runs, ref.task_id)
    if ref.gpus > 1 and task.kind == "train" and "LOCAL_RANK" not in os.environ:
        if is_finished(ws, task):
            return said
        done = subprocess.run(torchrun_command(ref), capture_output=True, text=True)
        if done.returncode != 0:
            tail = [ln for ln in (done.stderr or done.stdout).strip().splitlines() if ln.strip()]
            raise UserError(f"training {task.decoder_id} under torchrun ({ref.gpus} processes) failed: "
                            f"{tail[-1].strip() if tail else f'exit {done.returncode}'}")
        return [ln for ln in done.stdout.splitlines() if ln.strip()] + [f"(DDP: {ref.gpus} processes under torchrun)"]
    with threads() if ws.device.type == "cpu" else nullcontext():
        execute(ws, task, _Silent(), said.append)
    return said


def torchrun_command(ref: TaskRef) -> list[str]:
    """``torchrun --standalone --nproc_per_node=<gpus> -m fssbench.executors.task ...``"""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ref.gpus}", *ref.argv()]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m fssbench.executors.task", description="Run one task of a suite.")
    p.add_argument("--suite", required=True)
    p.add_argument("--profile")
    p.add_argument("--results-dir", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--weights-dir")
    p.add_argument("--task", required=True)
    a = p.parse_args(argv)
    ref = TaskRef(a.suite, a.profile, a.results_dir, a.device, a.weights_dir, a.task)
    for line in run_ref(ref):
        if int(os.environ.get("RANK", "0")) == 0:
            print(line, flush=True)


if __name__ == "__main__":
    main()


__all__ = ["TaskRef", "execute", "find_task", "is_finished", "run_ref", "torchrun_command"]
