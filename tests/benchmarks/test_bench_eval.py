"""Evaluation throughput on the embedded world, in episodes per second (the smoke suite's setting).

Skipped in the default run; run with

    .venv/bin/pytest tests/benchmarks/test_bench_eval.py --benchmark-only --benchmark-enable

The world is ``data/synth`` when it exists (``fssbench synth --out data/synth``), else it is generated
into a temporary folder first (about 10 s). Each round evaluates the same frozen 1-shot episodes of
fold 0 at the smoke protocol (``hsnet``, 128 px, batch 8) with the ``zoo-rn-s`` backbone, from a cold
image cache, so the figure covers decoding, resizing, the backbone, the method and the metrics.
HSNet's learner is randomly initialised (speed does not depend on its weights).
"""

from __future__ import annotations


import pytest
import torch

from fssbench.backbones import create_backbone
from fssbench.datasets import get_dataset
from fssbench.engine.data import CachedDataset
from fssbench.engine.evaluate import evaluate
from fssbench.episodes import sample_episodes
from fssbench.methods import create_method
from fssbench.protocols import get_protocol

EPISODES = 96


@pytest.mark.parametrize("method_name", ["prototype", "hsnet", "hm"])
def test_bench_eval_throughput_embedded_1shot(benchmark, world, method_name):
    torch.manual_seed(0)
    backbone = create_backbone("zoo-rn-s")
    method = create_method(method_name, backbone).eval()
    protocol = get_protocol("hsnet", img_size=128)
    specs = sample_episodes(get_dataset("pascal", world), 0, 1, EPISODES, 0).episodes

    def run():
        dataset = CachedDataset(get_dataset("pascal", world))  # cold cache every round
        return evaluate(method, dataset, specs, 0, "mask", protocol, batch_size=8)

    run()  # warm-up (allocator, oneDNN primitives, page cache)
    out = benchmark.pedantic(run, rounds=3, iterations=1)
    assert len(out.records) == EPISODES
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(
        {
            "episodes": EPISODES,
            "episodes_per_s": round(EPISODES / median, 2),
            "img_size": 128,
            "backbone": "zoo-rn-s",
            "threads": torch.get_num_threads(),
        }
    )
