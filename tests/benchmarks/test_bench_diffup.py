"""DiffUp speed: BAFT + UAPF per episode, one U-Net step, a 50-step ensemble sampling per episode, a
training step; each with its FLOP count and the achieved FLOP/s as a share of this machine's dense
fp32 matmul rate (a 1024 x 1024 matmul timed in the same session).

Skipped in the default run; run with

    .venv/bin/pytest tests/benchmarks/test_bench_diffup.py --benchmark-only --benchmark-enable

Two configurations: ``paper`` (the defaults: width 40 = 4.2M parameters, 64 px priors, 3 augmented
views, ensemble 4) and ``quick`` (width 8, 32 px priors, 1 augmented view, ensemble 2, the quick
profile's decoder). Episodes are the toy dataset's 1-shot episodes at 128 px on ``zoo-rn-s``, one thread; FLOPs are counted by
``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions, forward and backward). The
figures land in ``extra_info`` of ``--benchmark-json``.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from fssbench.backbones import create_backbone
from fssbench.episode import EpisodeBatch, collate
from fssbench.episodes import load_raw_episode, sample_episodes
from fssbench.protocols import get_protocol
from methods.diffup import DiffUp
from tests.toy import ToyDataset

SIZE = 128
THREADS = 1
CONFIGS: dict[str, dict[str, Any]] = {
    "paper": {},
    "quick": {"width": 8, "prior_size": 32, "augment": 1, "ensemble": 2, "prediction": "sample"},
}


def _batch(n: int, size: int = SIZE, sampling_seed: int | None = 0) -> EpisodeBatch:
    """``n`` 1-shot episodes of the toy dataset (one square object per image) at ``size`` px."""
    ds = ToyDataset(".", size=size)
    protocol = get_protocol("hsnet", img_size=size)
    specs = sample_episodes(ds, 0, 1, n, 0).episodes
    return collate([protocol.prepare(load_raw_episode(ds, s, 0, "mask")) for s in specs], sampling_seed=sampling_seed)


@pytest.fixture(autouse=True, scope="module")
def _threads():
    """One thread: DiffUp's kernels are small, and on a shared machine a second thread mostly waits."""
    from fssbench.workers import threads

    with threads(THREADS):
        yield


@pytest.fixture(scope="module")
def matmul_rate() -> float:
    """Dense fp32 FLOP/s of a 1024 x 1024 matmul on this machine, now (median of 20)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(20):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * 1024**3 / statistics.median(times)


def _flops(fn: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _report(benchmark, flops: int, rate: float, **info: Any) -> None:
    median = float(benchmark.stats.stats.median)
    achieved = flops / median
    benchmark.extra_info.update(
        {
            "flops": flops,
            "gflop_per_s": achieved / 1e9,
            "matmul_gflop_per_s": rate / 1e9,
            "fraction_of_matmul_rate": achieved / rate,
            "threads": torch.get_num_threads(),
            **info,
        }
    )


def _model(config: str, **over: Any) -> DiffUp:
    torch.manual_seed(0)
    return DiffUp(create_backbone("zoo-rn-s"), **{**CONFIGS[config], **over})


@pytest.mark.parametrize("config", list(CONFIGS))
def test_bench_diffup_baft_uapf_per_episode(benchmark, matmul_rate, config):
    m = _model(config).eval()
    batch = _batch(1)

    def run():
        with torch.no_grad():
            return m.conditions(batch, "mask", batch.support_fg, batch.support_bg, "cosine")

    run()
    cond = benchmark.pedantic(run, rounds=5, iterations=1)
    assert len(cond.levels) == 4
    _report(benchmark, _flops(run), matmul_rate, config=config, what="backbone passes + BAFT + UAPF + edges, 1 episode")


@pytest.mark.parametrize("config", list(CONFIGS))
def test_bench_diffup_unet_step(benchmark, matmul_rate, config):
    m = _model(config).eval()
    batch = _batch(1)
    cond = m.conditions(batch, "mask", batch.support_fg, batch.support_bg, "cosine")
    n, r = int(m.options["ensemble"]), int(m.options["prior_size"])
    levels = [c.repeat_interleave(n, 0) for c in cond.levels]
    image = cond.image.repeat_interleave(n, 0)
    x = torch.randn(n, 1, r, r)
    t = torch.full((n,), 100)

    def run():
        with torch.no_grad():
            return m.unet(x, t, levels, image)

    run()
    out = benchmark.pedantic(run, rounds=10, iterations=1)
    assert out[0].shape == x.shape
    _report(benchmark, _flops(run), matmul_rate, config=config, what=f"one U-Net + DQM pass on the {n} ensemble members of 1 episode",
            parameters=m.parameter_count())


@pytest.mark.parametrize("config", list(CONFIGS))
def test_bench_diffup_sampling_50_steps_per_episode(benchmark, matmul_rate, config):
    m = _model(config, sampling_steps=50).eval()

    def run():
        with torch.no_grad():
            return m.predict(_batch(1))

    run()
    pred = benchmark.pedantic(run, rounds=3, iterations=1)
    assert pred.scores.shape == (1, 2, SIZE, SIZE)
    _report(benchmark, _flops(run), matmul_rate, config=config, ensemble=int(m.options["ensemble"]),
            what="predict: conditions + 50 DDIM steps of the ensemble in one U-Net batch, 1 episode")


@pytest.mark.parametrize("config", list(CONFIGS))
def test_bench_diffup_training_step(benchmark, matmul_rate, config):
    m = _model(config, train_kinds=["mask"]).train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-4)
    batch = _batch(8, sampling_seed=None)  # training noise from the torch RNG

    def run():
        loss, _ = m.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    run()
    loss = benchmark.pedantic(run, rounds=5, iterations=1)
    assert torch.isfinite(loss)
    _report(benchmark, _flops(run), matmul_rate, config=config, batch=8, what="loss + backward + Adam step, 8 episodes")
