"""The evaluation pipeline against the model alone (issue: "keep the model busy").

Skipped in the default run; run with

    .venv/bin/pytest tests/benchmarks/test_bench_pipeline.py --benchmark-only --benchmark-enable

Side by side in one process, on 96 frozen 1-shot episodes of the embedded world (fold 0, 128 px
``hsnet`` protocol, ``zoo-rn-s``, batch 8, one torch thread as the runner's workers use):

* **model only**: ``method.predict`` over the batches, collated beforehand;
* **pipeline**: ``fssbench.engine.evaluate`` from the frozen specs with a cold image cache: decode,
  resize, collate, the model, scoring every episode, and the fold metrics with their bootstrap
  intervals.

``ratio`` = model-only time / pipeline time (1.0: the model never waits). Rounds alternate the two,
so a change of machine load hits both. The target is at least 0.9.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from fssbench.backbones import create_backbone
from fssbench.datasets import get_dataset
from fssbench.engine.data import CachedDataset, iter_batches
from fssbench.engine.evaluate import evaluate
from fssbench.episode import collate
from fssbench.episodes import sample_episodes
from fssbench.methods import create_method
from fssbench.protocols import get_protocol
from fssbench.workers import threads

EPISODES = 96
TARGET = 0.9


@pytest.mark.parametrize("method_name", ["prototype", "hsnet"])
def test_bench_pipeline_vs_model_only(benchmark, world, method_name):
    torch.manual_seed(0)
    method = create_method(method_name, create_backbone("zoo-rn-s")).eval()
    protocol = get_protocol("hsnet", img_size=128)
    specs = sample_episodes(get_dataset("pascal", world), 0, 1, EPISODES, 0).episodes
    warm = CachedDataset(get_dataset("pascal", world))
    batches = [b for _, b in iter_batches(warm, specs, 0, "mask", protocol, 8, lambda eps: collate(eps, sampling_seed=0))]

    @torch.no_grad()
    def model_only() -> None:
        for b in batches:
            method.predict(b)

    def pipeline():
        return evaluate(method, CachedDataset(get_dataset("pascal", world)), specs, 0, "mask", protocol, batch_size=8)

    with threads(1):
        model_only(), pipeline()  # warm-up (allocator, oneDNN primitives, page cache)
        m, p = [], []
        for _ in range(3):
            t = time.perf_counter()
            model_only()
            m.append(time.perf_counter() - t)
            t = time.perf_counter()
            out = pipeline()
            p.append(time.perf_counter() - t)
        benchmark.pedantic(pipeline, rounds=1, iterations=1)
    assert len(out.records) == EPISODES
    ratio = statistics.median(m) / statistics.median(p)
    benchmark.extra_info.update(
        {"episodes": EPISODES, "model_only_s": round(statistics.median(m), 3), "pipeline_s": round(statistics.median(p), 3),
         "ratio": round(ratio, 3), "target": TARGET, "threads": 1}
    )
    print(f"\n{method_name}: model only {statistics.median(m):.2f} s, pipeline {statistics.median(p):.2f} s, ratio {ratio:.2f}")
    assert ratio >= TARGET, f"the pipeline runs at {ratio:.2f}x of the model alone (target {TARGET})"
