"""Single-threaded CPU workers (``fssbench.workers``): the numbers do not depend on how many workers
run, errors in a worker reach the user as in one process, progress reaches the parent's bars."""

from __future__ import annotations

import json

import pytest
import torch

from fssbench.errors import UserError
from fssbench.results import load_result
from fssbench.executors.local import LocalExecutor
from fssbench.runner import SuiteRunner
from fssbench.suite import load_suite
from fssbench.workers import QueueProgress, can_fork, default_workers, run_tasks
from tests import toy  # noqa: F401  (registers the toy methods and backbones)
from tests.test_harness import quiet, suite_file

needs_fork = pytest.mark.skipif(not can_fork(), reason="workers fork (Linux)")


class _Bars:
    """Records what the stages do with a progress display."""

    def __init__(self) -> None:
        self.tasks: dict[int, list] = {}
        self.removed: list[int] = []

    def add_task(self, description: str, total: float | None = None, **_: object) -> int:
        self.tasks[len(self.tasks)] = [description, total, 0]
        return len(self.tasks) - 1

    def advance(self, task: int, advance: float = 1) -> None:
        self.tasks[task][2] += advance

    def remove_task(self, task: int) -> None:
        self.removed.append(task)


def _square(i: int, prog, say) -> int:
    t = prog.add_task(f"task {i}", total=2)
    prog.advance(t, 2)
    prog.remove_task(t)
    say(f"done {i} with {torch.get_num_threads()} thread(s)")
    return i * i


@needs_fork
@pytest.mark.parametrize("workers", [1, 2])
def test_every_task_runs_once_single_threaded_and_reports_progress(workers):
    bars, said, results = _Bars(), [], {}
    run_tasks(5, _square, workers, bars, said.append, lambda i, r: results.__setitem__(i, r))
    assert results == {i: i * i for i in range(5)}
    assert sorted(said) == [f"done {i} with 1 thread(s)" for i in range(5)]
    assert sorted(t[0] for t in bars.tasks.values()) == [f"task {i}" for i in range(5)]
    assert all(t[2] == 2 for t in bars.tasks.values()) and len(bars.removed) == 5


def _fails_on_two(i: int, prog, say) -> int:
    if i == 2:
        raise UserError("task 2 is broken; fix it")
    return i


@needs_fork
def test_an_error_in_a_worker_is_raised_here():
    with pytest.raises(UserError, match="task 2 is broken"):
        run_tasks(4, _fails_on_two, 2, _Bars(), lambda s: None, lambda i, r: None)


def test_queue_progress_forwards_tagged_messages():
    class Q(list):
        put = list.append

    q = Q()
    p = QueueProgress(q, 7)
    t = p.add_task("x", total=3)
    p.advance(t, 2)
    p.remove_task(t)
    assert q == [("add", 7, 1, "x", 3), ("advance", 7, 1, 2), ("remove", 7, 1)]


def test_workers_from_the_environment(monkeypatch):
    monkeypatch.setenv("FSSBENCH_WORKERS", "3")
    assert default_workers() == 3
    monkeypatch.setenv("FSSBENCH_WORKERS", "two")
    with pytest.raises(UserError, match="FSSBENCH_WORKERS"):
        default_workers()


@needs_fork
def test_results_do_not_depend_on_the_worker_count(tmp_path):
    methods = "[prototype, {name: toy-decoder}, {name: toy-stochastic}]"
    suite = load_suite(suite_file(tmp_path, methods, matrix="shots: [1, 2]"))
    runs = suite.expand()
    for w in (1, 2):
        stats = quiet(SuiteRunner(suite, tmp_path / f"w{w}", workers=w, executor=LocalExecutor()), runs)
        assert stats["evaluated"] == len(runs) and stats["trained"] == 2
    for r in runs:
        a, b = (load_result(tmp_path / f"w{w}" / f"{r.run_id}.json") for w in (1, 2))
        assert [x.to_dict() for x in a.records] == [x.to_dict() for x in b.records], r.run_id
        assert a.metrics["miou"] == b.metrics["miou"]
    for d in (tmp_path / "w1" / "decoders").iterdir():
        sa = torch.load(d / "best.pt", weights_only=True)["state"]
        sb = torch.load(tmp_path / "w2" / "decoders" / d.name / "best.pt", weights_only=True)["state"]
        assert all(torch.equal(sa[k], sb[k]) for k in sa), d.name
        assert json.loads((d / "decoder.json").read_text())["summary"]["best_epoch"] >= 0


@pytest.mark.parametrize("workers", [1, 2])
def test_sharded_evaluation_equals_one_worker_and_resumes_by_part(tmp_path, workers, monkeypatch):
    """`eval.shards`: a run's episodes in contiguous parts, each its own task; records merged in
    episode order and metrics computed once give exactly the one-worker result; a killed run keeps
    its finished parts and evaluates only the missing ones."""
    import fssbench.work as work
    from fssbench.workspace import Workspace

    methods = "[prototype, {name: toy-stochastic}]"
    plain = load_suite(suite_file(tmp_path, methods, eval_="batch_size: 4, artefacts: 3"))
    sharded = load_suite(suite_file(tmp_path, methods, eval_="batch_size: 4, artefacts: 3, shards: 3", name="h3"))
    runs = plain.expand()
    assert [r.run_id for r in runs] == [r.run_id for r in sharded.expand()]  # shards are not part of a run's identity
    quiet(SuiteRunner(plain, tmp_path / "one", workers=1, executor=LocalExecutor()), runs)
    stats = quiet(SuiteRunner(sharded, tmp_path / "three", workers=workers, executor=LocalExecutor()), runs)
    assert stats["evaluated"] == len(runs)
    for r in runs:
        a, b = (load_result(tmp_path / d / f"{r.run_id}.json") for d in ("one", "three"))
        assert [x.to_dict() for x in a.records] == [x.to_dict() for x in b.records], r.run_id
        assert {k: v for k, v in a.metrics.items()} == {k: v for k, v in b.metrics.items()}, r.run_id
        assert b.provenance["shards"] == 3 and (tmp_path / "three" / b.provenance["artefacts"]).is_file()
    assert not (tmp_path / "three" / "parts" / runs[0].run_id).exists()  # parts are removed once merged
    # a run killed after two of its three parts: only the third is evaluated again
    calls = []
    real = work.evaluate_run
    monkeypatch.setattr(work, "evaluate_run", lambda ws, run, part, prog: (calls.append(part), real(ws, run, part, prog))[1])
    out = tmp_path / "killed"
    quiet(SuiteRunner(sharded, out, workers=1, executor=LocalExecutor()), runs[:1])
    (out / f"{runs[0].run_id}.json").unlink()
    for i in range(2):
        quiet_part = real(Workspace(sharded, out, torch.device("cpu")), runs[0], (i, 3), _Bars())
        assert quiet_part is None
    calls.clear()
    quiet(SuiteRunner(sharded, out, workers=1, executor=LocalExecutor()), runs[:1])
    assert calls == [(2, 3)]
    assert [x.to_dict() for x in load_result(out / f"{runs[0].run_id}.json").records] == \
        [x.to_dict() for x in load_result(tmp_path / "one" / f"{runs[0].run_id}.json").records]


def _timed(i: int, prog, say) -> tuple[float, float]:
    import time

    t0 = time.time()
    time.sleep(0.3 if i == 0 else 0.05)
    return t0, time.time()


@needs_fork
@pytest.mark.parametrize("workers", [1, 2])
def test_a_task_starts_only_after_its_dependencies_and_others_fill_free_workers(workers):
    # 0 is long; 1 needs 0; 2 and 3 need nothing: with two workers they run beside 0, before 1
    spans: dict[int, tuple[float, float]] = {}
    run_tasks(4, _timed, workers, _Bars(), lambda s: None, lambda i, r: spans.__setitem__(i, r), deps=[[], [0], [], [2]])
    assert spans[1][0] >= spans[0][1] and spans[3][0] >= spans[2][1]
    if workers == 2:
        assert spans[2][1] <= spans[0][1] and spans[3][1] <= spans[0][1]  # ran on the free worker meanwhile


def test_dependencies_must_name_tasks_and_not_form_a_cycle():
    with pytest.raises(ValueError, match="other tasks"):
        run_tasks(2, _square, 1, _Bars(), lambda s: None, lambda i, r: None, deps=[[5], []])
    with pytest.raises(ValueError, match="cycle"):
        run_tasks(2, _square, 1, _Bars(), lambda s: None, lambda i, r: None, deps=[[1], [0]])
