"""The suite runner's overhead per run: everything ``fssbench run`` does around the evaluation itself.

Skipped in the default run; run with

    .venv/bin/pytest tests/benchmarks/test_bench_runner.py --benchmark-only --benchmark-enable

Each round runs a 16-run suite (prototype on the tiny ``toy-s`` backbone, 2 folds x 2 shots x 4
seeds, 2 episodes per run at 48 px) into a fresh results folder. Per run the runner builds the
method, samples and saves the frozen episode list, evaluates, bootstraps the intervals, gathers the
environment (git, packages) and writes the result file atomically. ``overhead_per_run_s`` is the
round's wall time minus the time spent inside the evaluation engine (``eval_seconds`` of each
result), divided by the runs.
"""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest

from fssbench.console import console
from fssbench.executors.local import LocalExecutor
from fssbench.runner import SuiteRunner
from fssbench.suite import load_suite
from tests import toy  # noqa: F401  (registers the toy-s backbone)

RUNS = 16


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory) -> Path:
    from fssbench.synth import generate

    tmp = tmp_path_factory.mktemp("bench_runner")
    root = tmp / "synth"
    generate(root, seed=0, size="small", force=True, show_progress=False)
    path = tmp / "overhead.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            name: overhead
            matrix: {{methods: [prototype], backbones: [toy-s], folds: [0, 1], shots: [1, 2], kinds: [mask], seeds: [0, 1, 2, 3]}}
            dataset: {{name: pascal, root: {root}}}
            protocol: {{name: hsnet, img_size: 48}}
            episodes: 2
            eval: {{batch_size: 2, device: cpu}}
            """
        )
    )
    return path


def test_bench_runner_overhead_per_run(benchmark, suite_file, tmp_path):
    suite = load_suite(suite_file)
    runs = suite.expand()
    assert len(runs) == RUNS
    rounds: list[tuple[Path, float]] = []

    def run() -> float:
        out = tmp_path / f"round{len(rounds)}"
        runner = SuiteRunner(suite, out, executor=LocalExecutor())
        with console.capture():
            start = time.perf_counter()
            stats = runner.run(runs, on_event=lambda s: None)
            wall = time.perf_counter() - start
        assert stats["evaluated"] == RUNS
        rounds.append((out, wall))
        return wall

    run()  # warm-up: imports, dataset cache, backbone construction
    benchmark.pedantic(run, rounds=3, iterations=1)
    overheads = []
    for out, wall in rounds[1:]:
        results = [json.loads(p.read_text()) for p in out.glob("*.json")]
        assert len(results) == RUNS
        eval_s = sum(r["provenance"]["eval_seconds"] for r in results)
        overheads.append((wall - eval_s) / RUNS)
    overheads.sort()
    benchmark.extra_info.update(
        {
            "runs": RUNS,
            "overhead_per_run_s": round(overheads[len(overheads) // 2], 4),
            "wall_per_run_s": round(benchmark.stats.stats.median / RUNS, 4),
        }
    )
