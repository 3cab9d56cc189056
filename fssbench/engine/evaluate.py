"""Evaluation engine: frozen episodes in, one record per episode out.

Only the per-episode records are kept (a few integers and the method's extra numbers each), so
memory does not grow with the number of episodes; fold metrics and bootstrap intervals are
computed from them, once, after the loop.

Randomness: with ``sampling_seed`` every episode gets its own noise generator derived from
(sampling seed, episode id) (``fssbench.episode.episode_generator``), so a stochastic method's
prediction for an episode never depends on the batch size, what else is in its batch, the run
order, or which runs came before.

Richer predictions: when ``predict`` returns a :class:`~fssbench.methods.Prediction`, each
declared mask output is scored under the protocol like the prediction (its counts land in the
record's ``extras`` as ``<name>.inter_fg`` ...), each scalar output lands as ``<name>``, and the
arrays of the first ``artefacts`` episodes are returned for figures.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from fssbench.datasets.base import FSSDataset
from fssbench.engine.data import iter_batches
from fssbench.episode import Episode, EpisodeBatch, EpisodeSpec, RawEpisode, collate
from fssbench.methods import Method, Prediction, as_prediction
from fssbench.metrics import EpisodeRecord, IoUMeter, bootstrap_ci
from fssbench.protocols import Protocol

COUNT_FIELDS = ("inter_fg", "union_fg", "inter_bg", "union_bg")


@dataclass
class EvalOutput:
    records: list[EpisodeRecord]
    metrics: dict[str, Any]
    seconds: float
    artefacts: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)


def output_names(records: Sequence[EpisodeRecord]) -> list[str]:
    """Mask outputs present in ``records`` (those with all four ``<name>.<count>`` extras)."""
    names: set[str] = set()
    for r in records:
        for k in r.extras:
            if k.endswith(".inter_fg"):
                names.add(k[: -len(".inter_fg")])
    return sorted(names)


def output_records(records: Sequence[EpisodeRecord], name: str) -> list[EpisodeRecord]:
    """The records of mask output ``name`` (same episodes, queries and classes; its own counts)."""
    out = []
    for r in records:
        counts = [int(r.extras[f"{name}.{f}"]) for f in COUNT_FIELDS]
        out.append(EpisodeRecord(r.episode_id, r.class_id, *counts, query=r.query))
    return out


def _metrics(records: Sequence[EpisodeRecord], class_ids: Sequence[int] | None, n_boot: int, seed: int) -> dict[str, Any]:
    meter = IoUMeter(class_ids)
    meter.update(list(records))
    out = meter.compute()
    out["miou_ci"] = list(bootstrap_ci(records, n_boot=n_boot, seed=seed, metric="miou", class_ids=class_ids))
    out["fbiou_ci"] = list(bootstrap_ci(records, n_boot=n_boot, seed=seed, metric="fbiou", class_ids=class_ids))
    out["class_iou"] = {str(k): v for k, v in out["class_iou"].items()}
    return out


def summarize(
    records: Sequence[EpisodeRecord],
    *,
    class_ids: Iterable[int] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Fold metrics (percent) with bootstrap 95% intervals, for the prediction and every mask output.

    ``class_ids``: every class of the fold. A class without episodes then counts as IoU 0 in the
    mean, exactly as HSNet's ``compute_iou`` counts it, and is listed in ``empty_classes`` so
    reports can say so.
    """
    ids = None if class_ids is None else sorted({int(c) for c in class_ids})
    out = _metrics(records, ids, n_boot, seed)
    seen = {r.class_id for r in records}
    out["fold_classes"] = ids if ids is not None else sorted(seen)
    out["empty_classes"] = [c for c in out["fold_classes"] if c not in seen]
    names = output_names(records)
    if names:
        out["outputs"] = {}
        for name in names:
            m = _metrics(output_records(records, name), ids, n_boot, seed)
            out["outputs"][name] = {k: m[k] for k in ("miou", "fbiou", "miou_ci", "fbiou_ci")}
    scalars = sorted({k for r in records for k in r.extras if "." not in k})
    if scalars:
        out["scalars"] = {k: float(np.nanmean([r.extras.get(k, math.nan) for r in records])) for k in scalars}
    return out


def _records(protocol: Protocol, pred: Prediction, group: Sequence[Episode], declared: frozenset[str]) -> list[EpisodeRecord]:
    """The batch's records: the prediction and every mask output scored in one pass each."""
    recs = protocol.score_batch(pred.scores, group)
    extras: list[dict[str, float]] = [{} for _ in group]
    for name, t in pred.masks.items():
        if name not in declared:
            raise ValueError(f"method returned mask output '{name}' that it does not declare in mask_outputs")
        for ex, o in zip(extras, protocol.score_batch(t, group)):
            ex.update({f"{name}.{f}": float(getattr(o, f)) for f in COUNT_FIELDS})
    for name, t in pred.scalars.items():
        if "." in name:
            raise ValueError(f"scalar output name '{name}' must not contain '.'")
        values = t.tolist()
        for ex, v in zip(extras, values):
            ex[name] = float(v)
    return [r.with_extras(**ex) if ex else r for r, ex in zip(recs, extras)]


def _artefact(pred: Prediction, i: int, ep: Episode) -> dict[str, np.ndarray]:
    """What a figure of this episode needs: inputs, truth, prediction and the method's arrays."""
    arrays = {
        "query_image": ep.query_image.numpy(),
        "query_mask": ep.query_mask.numpy().astype(np.uint8),
        "prediction": pred.scores[i].argmax(0).numpy().astype(np.uint8),
        "support_images": ep.support_images.numpy(),
    }
    if ep.support_fg is not None:
        arrays["support_fg"] = ep.support_fg.numpy()
    if ep.support_bg is not None:
        arrays["support_bg"] = ep.support_bg.numpy()
    for name, t in {**pred.masks, **pred.artefacts}.items():
        arrays[f"out.{name}"] = t[i].numpy()
    return arrays


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
    sampling_seed: int = 0,
    class_ids: Iterable[int] | None = None,
    artefacts: int = 0,
    n_boot: int = 1000,
    on_progress: Callable[[int], None] | None = None,
    extend: Callable[[RawEpisode], RawEpisode] | None = None,
    episode_extras: Callable[[int], dict[str, float]] | None = None,
    episode_artefacts: Callable[[int], dict[str, np.ndarray]] | None = None,
    compute_metrics: bool = True,
) -> EvalOutput:
    """Score ``method`` on the frozen ``specs``; ``on_progress(n)`` is called after each batch.

    ``artefacts``: keep the arrays of the first that many episodes (in ``specs`` order).
    ``extend``: applied to each loaded episode before the protocol (auxiliary shots);
    ``episode_extras`` / ``episode_artefacts``: more numbers for an episode's record, more arrays
    for its artefacts (by episode id), from whoever extended it. ``compute_metrics=False``: records only
    (a shard of a run; its metrics are computed once from all shards' records).
    """
    start = time.perf_counter()
    device = torch.device(device)
    method.eval()
    bs = batch_size if method.capabilities.batchable else 1
    records: list[EpisodeRecord] = []
    kept: dict[int, dict[str, np.ndarray]] = {}
    declared = frozenset(method.mask_outputs)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null()
    pin = device.type == "cuda"

    def make_batch(group: list[Episode]) -> EpisodeBatch:
        b = collate(group, sampling_seed=sampling_seed)
        return b.pin_memory() if pin else b

    for group, batch in iter_batches(dataset, specs, fold, kind, protocol, bs, make_batch, extend=extend):
        batch = batch.to(device, non_blocking=pin)
        with autocast:
            pred = as_prediction(method.predict(batch))
        pred = Prediction(
            scores=pred.scores.float().cpu(),
            masks={k: v.float().cpu() for k, v in pred.masks.items()},
            scalars={k: v.float().cpu() for k, v in pred.scalars.items()},
            artefacts={k: v.float().cpu() for k, v in pred.artefacts.items()},
        )
        for i, (ep, rec) in enumerate(zip(group, _records(protocol, pred, group, declared))):
            if episode_extras is not None:
                rec = rec.with_extras(**episode_extras(ep.spec.episode_id))
            records.append(rec)
            if len(kept) < artefacts:
                kept[ep.spec.episode_id] = _artefact(pred, i, ep)
                if episode_artefacts is not None:
                    kept[ep.spec.episode_id].update(episode_artefacts(ep.spec.episode_id))
        if on_progress is not None:
            on_progress(len(group))
        del batch, pred, group
    metrics = summarize(records, class_ids=class_ids, n_boot=n_boot) if compute_metrics else {}
    return EvalOutput(records=records, metrics=metrics, seconds=time.perf_counter() - start, artefacts=kept)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
