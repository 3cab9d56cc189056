"""Speed of the per-episode helpers that run once per support or run (formerly timed tests).

Skipped in the default run; run with

    .venv/bin/pytest tests/benchmarks/test_bench_annotations_stats.py --benchmark-only --benchmark-enable

Targets (one thread, a 375 x 500 PASCAL-sized mask): a box annotation ~1 ms, a scribble ~20 ms, a
1000-resample cluster bootstrap over 1000 episodes of 20 classes ~20 ms. They are targets to read
off the benchmark table, not assertions that a loaded machine could fail.
"""

from __future__ import annotations

import pytest

from fssbench.annotations import derive_annotation
from fssbench.metrics import bootstrap_ci
from tests.test_annotations import blob_mask
from tests.test_metrics import synthetic_run


@pytest.mark.parametrize("kind,seed", [("bbox", 3), ("scribble", 11)])
def test_bench_derive_annotation(benchmark, kind: str, seed: int) -> None:
    mask, band = blob_mask(seed, 375, 500)
    ann = benchmark(derive_annotation, kind, mask, band)
    assert ann.fg.shape == mask.shape


def test_bench_bootstrap(benchmark) -> None:
    recs = synthetic_run(1000, n_classes=20)
    ci = benchmark.pedantic(bootstrap_ci, args=(recs,), kwargs={"n_boot": 1000, "seed": 0}, rounds=5, iterations=1)
    assert ci is not None
