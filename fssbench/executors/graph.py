"""A suite's pending work as a dependency graph of tasks, each with the resources it asks for.

Planning (``fssbench.plan``) says *what* is pending; this module turns it into tasks that any
executor can run: one ``train`` task per pending decoder, one ``eval`` task per pending run (or per
shard of it, ``eval.shards``), an evaluation depending on the training of its decoder. Task ids are
stable strings (``train:<decoder_id>``, ``eval:<run_id>``, ``eval:<run_id>:<i>-of-<n>``) so a log line,
a Ray task name and a SLURM job name all say the same thing.

Every task is idempotent against the results folder: a training resumes from its ``last.pt`` and
an evaluation writes its result (or part) file atomically at the end, so an executor that re-runs a
killed or pre-empted task loses nothing, and one that starts again never re-runs a finished task
(finished tasks are simply not in the graph).

Resources (``fssbench.resources``: the suite's, per task kind, then the command line's) are what a
cluster executor requests per task: CPUs, GPUs, memory, wall time, partition. The local executor runs CPU
tasks ``--workers`` at a time (one torch thread each) and CUDA tasks one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from fssbench.plan import Plan
from fssbench.resources import TASK_KINDS, Resources, resources_for
from fssbench.suite import Run

@dataclass(frozen=True)
class Task:
    """One unit of work: train a decoder, or evaluate a run (or one shard of it)."""

    task_id: str
    kind: str
    run: Run
    resources: Resources
    deps: tuple[str, ...] = ()
    part: tuple[int, int] | None = None
    decoder_id: str | None = None
    budget: int = 0
    """Training episodes (epochs x episodes per epoch): the longest trainings start first."""

    @property
    def name(self) -> str:
        """A job name for schedulers (no ':')."""
        return "fssbench-" + self.task_id.replace(":", "-")


@dataclass
class Graph:
    tasks: list[Task] = field(default_factory=list)
    merges: dict[str, list[str]] = field(default_factory=dict)
    """run id -> the task ids of its shards (the driver merges once all are done)."""

    def __iter__(self):
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def by_id(self) -> dict[str, Task]:
        return {t.task_id: t for t in self.tasks}

    def order(self) -> list[Task]:
        """Tasks in a valid order that starts the longest trainings first, then evaluations grouped
        by evaluation backbone and method (plan order within a group), so that a worker's
        consecutive evaluations share backbone features (``fssbench.backbones.cache``). An
        executor starts an evaluation only after its decoder's training, whatever its place."""
        trains = sorted((t for t in self.tasks if t.kind == "train"), key=lambda t: -t.budget)
        evals = [t for t in self.tasks if t.kind != "train"]
        first: dict[tuple, int] = {}
        for i, t in enumerate(evals):
            first.setdefault((t.run.config.eval_backbone, t.run.config.method), i)
        evals.sort(key=lambda t: first[(t.run.config.eval_backbone, t.run.config.method)])
        return trains + evals


def build_graph(
    plan: Plan,
    shards_of: Any,
    part_done: Any,
    suite_resources: Mapping[str, Resources] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Graph:
    """The plan's pending work as tasks. ``shards_of(run) -> n`` is the run's shard count;
    ``part_done(run, i, n)`` says whether shard ``i`` survived an earlier, interrupted run."""
    g = Graph()
    res = {k: resources_for(k, suite_resources, overrides) for k in TASK_KINDS}
    pending_train = set()
    for d in plan.pending_decoders:
        cfg = d.run.train_config or {}
        budget = int(cfg.get("epochs", 0)) * int(cfg.get("episodes_per_epoch", 0))
        g.tasks.append(Task(f"train:{d.decoder_id}", "train", d.run, res["train"], decoder_id=d.decoder_id, budget=budget))
        pending_train.add(d.decoder_id)
    for e in plan.pending_evaluations:
        r = e.run
        deps = (f"train:{r.decoder_id}",) if r.decoder_id in pending_train and not r.config.incompatible else ()
        n = shards_of(r)
        if n == 1:
            g.tasks.append(Task(f"eval:{r.run_id}", "eval", r, res["eval"], deps, decoder_id=r.decoder_id))
            continue
        g.merges[r.run_id] = []
        for i in range(n):
            tid = f"eval:{r.run_id}:{i}-of-{n}"
            g.merges[r.run_id].append(tid)
            if not part_done(r, i, n):
                g.tasks.append(Task(tid, "eval", r, res["eval"], deps, part=(i, n), decoder_id=r.decoder_id))
    return g


__all__ = ["Graph", "Task", "build_graph"]
