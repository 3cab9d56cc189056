"""HSNet inference speed: one 1-shot episode at 400x400 (the authors' test size) with ResNet-50.

Skipped in the default run (pytest is configured with ``--benchmark-skip``); run with

    .venv/bin/pytest tests/benchmarks/test_bench_hsnet.py --benchmark-only --benchmark-enable

The backbone is fssbench's ``in1k-rn50`` with random weights (the speed does not depend on them);
the time covers the query and support backbone passes, the 13 correlations and the learner.
"""

from __future__ import annotations

import pytest
import torch

from fssbench.backbones import create_backbone
from fssbench.episode import EpisodeBatch
from methods.hsnet.model import HSNet

SIZE = 400


def _episode(size: int = SIZE) -> EpisodeBatch:
    g = torch.Generator().manual_seed(0)
    fg = torch.zeros(1, 1, size, size)
    fg[..., size // 4 : 3 * size // 4, size // 3 : 2 * size // 3] = 1
    return EpisodeBatch(
        episodes=[],
        query_image=torch.rand(1, 3, size, size, generator=g),
        query_mask=torch.zeros(1, size, size),
        query_ignore=torch.zeros(1, size, size, dtype=torch.bool),
        support_images=torch.rand(1, 1, 3, size, size, generator=g),
        support_fg=fg,
        support_bg=1 - fg,
        support_ignore=torch.zeros(1, 1, size, size, dtype=torch.bool),
        class_ids=torch.zeros(1, dtype=torch.long),
        prompts=["a photo of a thing"],
        kind="mask",
    )


@pytest.mark.parametrize("hybrid_masking", [False], ids=["hsnet"])
def test_bench_hsnet_forward_rn50_400_1shot_cpu(benchmark, hybrid_masking):
    torch.manual_seed(0)
    model = HSNet(create_backbone("in1k-rn50", weights="random"), hybrid_masking=hybrid_masking).eval()
    batch = _episode()

    def run() -> torch.Tensor:
        with torch.no_grad():
            return model.predict(batch)

    run()  # warm-up (allocator, oneDNN primitives)
    logits = benchmark.pedantic(run, rounds=5, iterations=1)
    assert logits.shape == (1, 2, SIZE, SIZE)
    benchmark.extra_info.update({"size": SIZE, "shot": 1, "backbone": "in1k-rn50 (random)", "threads": torch.get_num_threads()})
