"""Feature cache: a stitching matrix computes each backbone feature once.

In an N x M stitching matrix every evaluation backbone is evaluated with N decoders of a method on
the *same* frozen episodes, batched the same way: the backbone sees the same input batches N times.
With a cache active (``eval.feature_cache_gb`` in a suite, default 1 GB; 0 turns it off),
:meth:`fssbench.backbones.base.Backbone.forward` keys each call by (backbone, requested layers,
input bytes, shape, dtype, device) and returns the stored features on a repeat.

Exact by construction: a hit returns what the same call computed before on the same bytes (a copy,
so that a method changing its features in place cannot change the cache), so the numbers with and
without the cache are identical (``tests/test_feature_cache.py``).

Policy (memory, per process): entries are kept up to the size bound. When a new entry does not fit,
whole backbones are evicted, least recently used first, but never the backbone being called; if it
still does not fit, it is not stored. Evaluations arrive grouped by evaluation backbone
(``fssbench.executors.graph``), so a repeated pass over one backbone's episodes hits on as much of
them as fits, where plain LRU would hit nothing once a pass is larger than the cache. The local
executor's forked workers each have their own cache (a worker's consecutive evaluations share it).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch

_ACTIVE: list["FeatureCache"] = []


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    stored: int = 0
    backbone_seconds: float = 0.0
    """Time spent in backbone calls (hits included: hashing and copying)."""

    def as_dict(self) -> dict[str, Any]:
        return {"hits": self.hits, "misses": self.misses, "stored": self.stored, "backbone_seconds": round(self.backbone_seconds, 3)}


@dataclass
class FeatureCache:
    max_bytes: int
    stats: CacheStats = field(default_factory=CacheStats)
    _by_backbone: "OrderedDict[int, OrderedDict[tuple, dict[str, torch.Tensor]]]" = field(default_factory=OrderedDict)
    _bytes: dict[int, int] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(self._bytes.values())

    @staticmethod
    def key(images: torch.Tensor, names: Sequence[str]) -> tuple:
        x = images.detach()
        data = x.contiguous().cpu().numpy().tobytes() if x.device.type != "cpu" else x.contiguous().numpy().tobytes()
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        return (tuple(names), tuple(x.shape), str(x.dtype), str(x.device), digest)

    def get(self, owner: Any, key: tuple) -> dict[str, torch.Tensor] | None:
        entries = self._by_backbone.get(id(owner))
        if entries is None or key not in entries:
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        self._by_backbone.move_to_end(id(owner))
        return {k: v.clone() for k, v in entries[key].items()}

    def put(self, owner: Any, key: tuple, feats: dict[str, torch.Tensor]) -> None:
        size = sum(t.numel() * t.element_size() for t in feats.values())
        oid = id(owner)
        while self.nbytes + size > self.max_bytes:
            others = [b for b in self._by_backbone if b != oid]
            if not others:
                return  # full with the current backbone's features: keep them, store nothing more
            self._by_backbone.pop(others[0])
            self._bytes.pop(others[0], None)
        self._by_backbone.setdefault(oid, OrderedDict())[key] = {k: v.detach().clone() for k, v in feats.items()}
        self._by_backbone.move_to_end(oid)
        self._bytes[oid] = self._bytes.get(oid, 0) + size
        self.stats.stored += 1

    def clear(self) -> None:
        self._by_backbone.clear()
        self._bytes.clear()


def active() -> FeatureCache | None:
    return _ACTIVE[-1] if _ACTIVE else None


@contextmanager
def feature_cache(cache: FeatureCache | None) -> Iterator[FeatureCache | None]:
    """Backbone calls inside the block use ``cache`` (``None``: no cache)."""
    if cache is None:
        yield None
        return
    _ACTIVE.append(cache)
    try:
        yield cache
    finally:
        _ACTIVE.pop()


def cached_extract(backbone: Any, images: torch.Tensor, names: list[str], extract: Any) -> dict[str, torch.Tensor]:
    """``extract()`` through the active cache (if any), timing the call into its stats."""
    cache = active()
    if cache is None:
        return extract()
    t0 = time.perf_counter()
    try:
        key = FeatureCache.key(images, names)
        hit = cache.get(backbone, key)
        if hit is not None:
            return hit
        feats = extract()
        cache.put(backbone, key, feats)
        return feats
    finally:
        cache.stats.backbone_seconds += time.perf_counter() - t0


__all__ = ["CacheStats", "FeatureCache", "active", "cached_extract", "feature_cache"]
