"""Single-threaded workers for the runner's CPU stages (training decoders, evaluating runs).

Why: CPU reductions are split by thread, so the bits of a trained decoder or an evaluation depend
on torch's thread count, and with it on the machine's core count. Every CPU training and
evaluation therefore runs with **one torch thread** (the zoo's recipe, ``fssbench.backbones.zoo``),
and the machine's cores are used by running ``workers`` of them at once in forked processes. Which
worker does a task, and how many workers there are, changes no number (``tests/test_workers.py``).
Single-threaded workers are also faster for these small models: two OpenMP threads on two shared
cores mostly wait at barriers.

Forked workers inherit the parent's built backbones, dataset cache and plan (nothing is pickled
but task indices and results); a worker reports progress and messages through a queue, which the
parent turns into its progress bars, so the display is the same as in one process.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch

THREADS = 1
"""Torch threads per CPU task (part of what fixes the numbers: changing it changes the bits)."""

_STATE: dict[str, Any] = {}  # the parent's task function and context, inherited by forked workers


def default_workers() -> int:
    """One worker per core, at most 8 (``$FSSBENCH_WORKERS`` overrides)."""
    env = os.environ.get("FSSBENCH_WORKERS")
    if env:
        if not env.strip().isdigit() or int(env) < 1:
            from fssbench.errors import UserError

            raise UserError(f"$FSSBENCH_WORKERS must be a whole number >= 1, got {env!r}; unset it or set e.g. FSSBENCH_WORKERS=2")
        return int(env)
    return max(1, min(8, os.cpu_count() or 1))


def can_fork() -> bool:
    return sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods()


@contextmanager
def threads(n: int = THREADS) -> Iterator[None]:
    """``n`` torch intra-op threads for the duration; the previous count restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class QueueProgress:
    """The part of ``rich.progress.Progress`` the stages use, forwarded to the parent by a queue."""

    def __init__(self, q: Any, tag: int) -> None:
        self.q, self.tag, self.n = q, tag, 0

    def add_task(self, description: str, total: float | None = None, **_: Any) -> int:
        self.n += 1
        self.q.put(("add", self.tag, self.n, description, total))
        return self.n

    def advance(self, task: int, advance: float = 1) -> None:
        self.q.put(("advance", self.tag, task, advance))

    def remove_task(self, task: int) -> None:
        self.q.put(("remove", self.tag, task))


def _die_with(parent: int) -> None:
    """Ask Linux to end this worker when its parent dies (``PR_SET_PDEATHSIG``): a ``fssbench run``
    killed with SIGKILL must not leave workers behind, waiting for tasks forever."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux / no prctl: the pool's own shutdown still applies
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _init(q: Any, parent: int) -> None:
    _die_with(parent)
    _STATE["queue"] = q
    torch.set_num_threads(THREADS)


def _quiet_init(init: Callable[..., None] | None, args: tuple[Any, ...]) -> None:
    """First thing in a worker: leave Ctrl-C to the parent. A terminal sends SIGINT to the whole
    process group; a worker that took it would print a ``KeyboardInterrupt`` traceback (an idle one
    from its task queue) before the parent's one line. The worker was forked with SIGINT blocked, so
    no interrupt lands before this; one already pending is discarded when it is unblocked."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if init is not None:
        init(*args)


class ForkPool:
    """A ``ProcessPoolExecutor`` of forked workers that leave Ctrl-C to the parent.

    Used as a context manager. On Ctrl-C in the parent (or a ``KeyboardInterrupt`` a task raised)
    the workers are terminated at once: every file a task writes is written atomically, so what a
    terminated task had finished is kept and the rest resumes on the next run. On any other error,
    tasks not started are dropped and running ones finish.
    """

    def __init__(self, workers: int, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()) -> None:
        self.ex = ProcessPoolExecutor(
            workers, mp_context=mp.get_context("fork"), initializer=_quiet_init, initargs=(initializer, initargs)
        )

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``executor.submit`` with SIGINT blocked meanwhile: the workers are forked here."""
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            return self.ex.submit(fn, *args)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def terminate(self) -> None:
        """End every worker now (Python < 3.14 has no public call for it: the pool's own table)."""
        for proc in list((getattr(self.ex, "_processes", None) or {}).values()):
            if proc.is_alive():
                proc.terminate()

    def __enter__(self) -> "ForkPool":
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if kind is None:
            self.ex.shutdown(wait=True)
            return
        if issubclass(kind, KeyboardInterrupt):
            self.terminate()
        self.ex.shutdown(wait=True, cancel_futures=True)


def _call(i: int) -> Any:
    q = _STATE["queue"]
    return _STATE["fn"](i, QueueProgress(q, i), lambda s: q.put(("say", i, s)))


def run_tasks(
    n: int,
    fn: Callable[[int, Any, Callable[[str], None]], Any],
    workers: int,
    prog: Any,
    say: Callable[[str], None],
    on_done: Callable[[int, Any], None],
    deps: Sequence[Sequence[int]] | None = None,
) -> None:
    """Call ``fn(i, progress, say)`` for ``i`` in ``range(n)``, ``workers`` at a time.

    ``deps[i]``: the tasks that must finish before task ``i`` starts; among the tasks that may
    start, the lowest index starts first (so the order of the tasks is their priority).
    ``on_done(i, result)`` runs in this process as each task finishes (in completion order). The
    first task that raises stops the pool (tasks not started are dropped, running ones finish)
    and its exception is raised here; Ctrl-C ends the workers at once (``ForkPool``). With one
    worker, or where fork is unavailable, the tasks run here, one after the other in a
    dependency-respecting order, with the same single thread.
    """
    if n == 0:
        return
    need = [set(deps[i]) if deps is not None else set() for i in range(n)]
    if any(j == i or not 0 <= j < n for i in range(n) for j in need[i]):
        raise ValueError("deps must name other tasks of range(n)")
    workers = max(1, min(workers, n))
    finished: set[int] = set()
    waiting = list(range(n))

    def ready() -> list[int]:
        return [i for i in waiting if need[i] <= finished]

    if workers == 1 or not can_fork():
        with threads():
            while waiting:
                now = ready()
                if not now:
                    raise ValueError("deps form a cycle")
                i = now[0]
                waiting.remove(i)
                on_done(i, fn(i, prog, say))
                finished.add(i)
        return
    _STATE["fn"] = fn
    q: Any = mp.get_context("fork").SimpleQueue()
    ids: dict[tuple[int, int], Any] = {}

    def drain() -> None:
        while not q.empty():
            msg = q.get()
            kind = msg[0]
            if kind == "say":
                say(msg[2])
            elif kind == "add":
                ids[(msg[1], msg[2])] = prog.add_task(msg[3], total=msg[4])
            elif kind == "advance":
                prog.advance(ids[(msg[1], msg[2])], msg[3])
            elif kind == "remove":
                prog.remove_task(ids.pop((msg[1], msg[2])))

    # the parent never runs a multi-threaded region the workers could inherit
    with threads(), ForkPool(workers, _init, (q, os.getpid())) as pool:
        try:
            running: dict[Any, int] = {}
            while waiting or running:
                for i in ready()[: workers - len(running)]:  # a free worker takes the first ready task
                    waiting.remove(i)
                    running[pool.submit(_call, i)] = i
                if not running:
                    raise ValueError("deps form a cycle")
                done, _ = wait(set(running), timeout=0.2, return_when=FIRST_COMPLETED)
                drain()
                for f in sorted(done, key=lambda f: running[f]):
                    i = running.pop(f)
                    on_done(i, f.result())
                    finished.add(i)
            drain()
        finally:
            _STATE.pop("fn", None)


__all__: Sequence[str] = ["THREADS", "ForkPool", "default_workers", "run_tasks", "threads", "QueueProgress"]
