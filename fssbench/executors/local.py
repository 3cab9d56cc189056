"""The local executor: this machine, in dependency order, the longest trainings first.

On the CPU, ``workers`` tasks run at once in forked single-threaded workers (``fssbench.workers``),
and an evaluation starts as soon as its decoder is trained: while the last, longest trainings run,
the other workers evaluate the cells that are ready (a stitching matrix spends no time with idle
cores between its training and evaluation phases). On CUDA the tasks run here, one at a time. A training that asks for several GPUs
(``resources.train.gpus``) runs under ``torchrun`` with one process per GPU (on the CPU: per
requested "GPU", a gloo process, which is how it is tested).
"""

from __future__ import annotations

from typing import Any, Callable

from fssbench.executors.base import ExecutionContext, task_ref
from fssbench.executors.graph import Graph, Task
from fssbench.executors.task import execute, run_ref
from fssbench.workers import run_tasks


class LocalExecutor:
    name = "local"

    def check(self) -> None:
        return None

    def run(self, ctx: ExecutionContext, graph: Graph, on_done: Callable[[Task], None]) -> None:
        order = graph.order()
        index = {t.task_id: i for i, t in enumerate(order)}
        deps = [[index[d] for d in t.deps if d in index] for t in order]
        ws = ctx.workspace

        def one(t: Task, prog: Any, say: Callable[[str], None]) -> None:
            if t.kind == "train" and t.resources.gpus > 1:  # DDP: torchrun, one process per GPU
                for line in run_ref(task_ref(ctx, t)):
                    say(line)
                return
            execute(ws, t, prog, say)

        def call(i: int, prog: Any, say: Callable[[str], None]) -> None:
            one(order[i], prog, say)

        if ws.device.type != "cpu":  # graph.order() is already a dependency order
            for t in order:
                one(t, ctx.prog, ctx.say)
                on_done(t)
            return
        run_tasks(len(order), call, ctx.workers, ctx.prog, ctx.say, lambda i, _: on_done(order[i]), deps=deps)


__all__ = ["LocalExecutor"]
