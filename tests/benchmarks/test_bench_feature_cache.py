"""Backbone time of the quick backbone-upgrade matrix with and without the feature cache, in one run.

Skipped in the default run; run with

    .venv/bin/pytest tests/benchmarks/test_bench_feature_cache.py --benchmark-only --benchmark-enable -s

Replays every evaluation of ``suites/backbone_upgrade.yaml``'s quick profile (DiffUp, HSNet and
prototype, 4 x 4 zoo backbones; HSNet's incompatible cells have no backbone calls) on the same
frozen episodes, in the order the executor gives them (grouped by evaluation backbone and method),
in one process with one torch thread, after a warm-up pass (one batch per evaluation, uncached),
once without the cache and once with a 1 GB cache. Backbone calls do not
depend on a decoder's weights, so decoders are randomly initialised (no training). ``EPISODES``
(default 60, ``$FSSBENCH_BENCH_EPISODES``) of the profile's 300 keep a round short.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from fssbench.backbones.cache import FeatureCache, feature_cache
from fssbench.engine.data import CachedDataset
from fssbench.engine.evaluate import evaluate
from fssbench.episodes import sample_episodes
from fssbench.methods import create_method
from fssbench.suite import load_suite
from fssbench.workers import threads
from fssbench.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]
EPISODES = int(os.environ.get("FSSBENCH_BENCH_EPISODES", "60"))


def _replay(runner: Workspace, runs, specs, cache: FeatureCache) -> float:
    t0 = time.perf_counter()
    for run in runs:
        cfg = run.config
        torch.manual_seed(0)
        method = create_method(cfg.method, runner.backbone(cfg.train_backbone), **cfg.method_options)
        if cfg.eval_backbone != cfg.train_backbone:
            method.set_backbone(runner.backbone(cfg.eval_backbone))
        with feature_cache(cache):
            evaluate(method, runner.dataset(), specs, cfg.fold, cfg.kind, runner.protocol(run), batch_size=16, n_boot=10)
    return time.perf_counter() - t0


def test_bench_feature_cache_quick_matrix(benchmark, tmp_path):
    suite = load_suite(REPO / "suites" / "backbone_upgrade.yaml", "quick", check_data=False)
    if not (REPO / "data" / "synth" / "synth.json").exists():
        from fssbench.synth import generate

        generate(REPO / "data" / "synth", seed=0, force=True, show_progress=False)
    runner = Workspace(suite, tmp_path / "r", torch.device("cpu"))
    runs = [r for r in suite.expand() if not r.config.incompatible]
    runs.sort(key=lambda r: (r.config.eval_backbone, r.config.method))
    ds: CachedDataset = runner.dataset()
    specs = sample_episodes(ds, 0, 1, EPISODES, 0).episodes
    out = {}
    with threads(1):
        _replay(runner, runs, specs[:16], FeatureCache(0))  # warm-up: oneDNN primitives, image cache, lazy imports
        for name, gb in (("without", 0.0), ("with", 1.0)):
            cache = FeatureCache(int(gb * 2**30))
            wall = _replay(runner, runs, specs, cache)
            out[name] = (cache.stats.backbone_seconds, wall, cache.stats.hits, cache.stats.misses)
        benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    (b0, w0, _, m0), (b1, w1, h1, m1) = out["without"], out["with"]
    benchmark.extra_info.update({
        "evaluations": len(runs), "episodes": EPISODES, "backbone_s_without": round(b0, 2), "backbone_s_with": round(b1, 2),
        "wall_s_without": round(w0, 2), "wall_s_with": round(w1, 2), "hits": h1, "misses": m1,
        "backbone_speedup": round(b0 / b1, 2),
    })
    print(f"\n{len(runs)} evaluations x {EPISODES} episodes: backbone {b0:.1f} s without the cache, {b1:.1f} s with "
          f"({b0 / b1:.1f}x; {h1} hits, {m1} misses); whole replay {w0:.1f} s -> {w1:.1f} s")
    assert m1 < m0 and b1 < b0
