"""Evaluation engine: frozen episodes in, one record per episode out.

Only the per-episode intersection/union records are kept (a few integers each), so memory does
not grow with the number of episodes; fold metrics and bootstrap intervals are computed from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from fssbench.datasets.base import FSSDataset
from fssbench.engine.data import batched, iter_episodes
from fssbench.episode import EpisodeSpec, collate
from fssbench.methods import Method
from fssbench.metrics import EpisodeRecord, IoUMeter, bootstrap_ci
from fssbench.protocols import Protocol


@dataclass
class EvalOutput:
    records: list[EpisodeRecord]
    metrics: dict[str, Any]
    seconds: float


def summarize(records: Sequence[EpisodeRecord], *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Fold metrics (percent) with stratified-bootstrap 95% intervals."""
    meter = IoUMeter()
    meter.update(list(records))
    out = meter.compute()
    out["miou_ci"] = list(bootstrap_ci(records, n_boot=n_boot, seed=seed, metric="miou"))
    out["fbiou_ci"] = list(bootstrap_ci(records, n_boot=n_boot, seed=seed, metric="fbiou"))
    out["class_iou"] = {str(k): v for k, v in out["class_iou"].items()}
    return out


@torch.no_grad()
def evaluate(
    method: Method,
    dataset: FSSDataset,
    specs: Sequence[EpisodeSpec],
    fold: int,
    kind: str,
    protocol: Protocol,
    *,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    on_progress: Callable[[int], None] | None = None,
) -> EvalOutput:
    """Score ``method`` on the frozen ``specs``; ``on_progress(n)`` is called after each batch."""
    import time

    start = time.perf_counter()
    device = torch.device(device)
    method.eval()
    bs = batch_size if method.capabilities.batchable else 1
    records: list[EpisodeRecord] = []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null()
    for group in batched(iter_episodes(dataset, specs, fold, kind, protocol), bs):
        batch = collate(group).to(device)
        with autocast:
            scores = method.predict(batch)
        scores = scores.float().cpu()
        for i, ep in enumerate(group):
            records.append(protocol.score(scores[i], ep))
        if on_progress is not None:
            on_progress(len(group))
        del batch, scores, group
    return EvalOutput(records=records, metrics=summarize(records), seconds=time.perf_counter() - start)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
