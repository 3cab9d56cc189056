"""Episode streams for the engines: frozen lists for evaluation, seeded draws for training."""

from __future__ import annotations

from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from fssbench.datasets.base import FSSDataset
from fssbench.episode import Episode, EpisodeSpec, RawEpisode
from fssbench.episodes import load_raw_episode, sample_episodes
from fssbench.protocols import Protocol


class CachedDataset:
    """Wrap a dataset with a bounded LRU cache of decoded images and labels.

    Training revisits the same few thousand images every epoch; decoding them once saves most of
    the data time on a laptop CPU. The cache is bounded so memory stays flat.
    """

    def __init__(self, dataset: FSSDataset, max_items: int = 4096) -> None:
        self._ds = dataset
        self._max = max_items
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()
        self._labels: OrderedDict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def __getattr__(self, item: str):  # delegate everything else
        return getattr(self._ds, item)

    def _get(self, cache: OrderedDict, key, load):
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        value = load()
        cache[key] = value
        if len(cache) > self._max:
            cache.popitem(last=False)
        return value

    def load_image(self, name: str) -> np.ndarray:
        return self._get(self._images, name, lambda: self._ds.load_image(name))

    def load_label(self, name: str, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        return self._get(self._labels, (name, class_id), lambda: self._ds.load_label(name, class_id))


def iter_batches(
    dataset: FSSDataset,
    specs: Sequence[EpisodeSpec],
    fold: int,
    kind: str,
    protocol: Protocol,
    size: int,
    collate: Callable[[list[Episode]], Any],
    *,
    ahead: int = 2,
    extend: Callable[[RawEpisode], RawEpisode] | None = None,
) -> Iterator[tuple[list[Episode], Any]]:
    """``(episodes, collate(episodes))`` per batch of ``size``, in order, each batch loaded,
    prepared and collated on a background thread ``ahead`` batches before it is needed.

    Why: decoding, resizing and collating a batch cost about as much as a small model's forward
    pass; done on the model's own thread, the model waits half of the time. PIL decoding and torch's
    resizing release the GIL, so the thread runs beside the model on another core."""

    def load(chunk: Sequence[EpisodeSpec]) -> tuple[list[Episode], Any]:
        eps = []
        for spec in chunk:
            raw: RawEpisode = load_raw_episode(dataset, spec, fold, kind)
            if extend is not None:
                raw = extend(raw)
            eps.append(protocol.prepare(raw))
        return eps, collate(eps)

    chunks = [specs[i : i + size] for i in range(0, len(specs), size)]
    if ahead <= 0:
        for c in chunks:
            yield load(c)
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = [pool.submit(load, c) for c in chunks[:ahead]]
        nxt = ahead
        while pending:
            fut = pending.pop(0)
            if nxt < len(chunks):
                pending.append(pool.submit(load, chunks[nxt]))
                nxt += 1
            yield fut.result()


def training_specs(dataset: FSSDataset, fold: int, shot: int, n: int, seed: int, epoch: int) -> list[EpisodeSpec]:
    """Episodes of epoch ``epoch``: a fresh class-uniform draw from the base classes' training list.

    The seed is combined with the epoch, so each epoch sees different pairs (HSNet re-seeds every
    epoch and repeats them) while the whole schedule is still fixed by the seed.
    """
    return sample_episodes(
        dataset, fold, shot, n, seed=int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]),
        split="trn", sampling="class_uniform",
    ).episodes
