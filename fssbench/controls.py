"""Evaluation controls: what a method's score means, measured on the same queries.

``other-class`` supports: each episode keeps its query, class and id, but its supports are
replaced by images of *another* class of the same fold, annotated with that class. A method that
uses its supports must lose most of its score; one that does not (it segments "the salient
base-like object" whatever the support shows) keeps it. Because episode ids and queries are
unchanged, the control run and the real run are paired episode by episode.

The replacement is deterministic: it depends on (seed, episode id) and the split lists only.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Sequence

import numpy as np

from fssbench.datasets.base import FSSDataset
from fssbench.episode import EpisodeSpec
from fssbench.errors import UserError

SUPPORT_MODES: tuple[str, ...] = ("own", "other-class")
"""``own``: the episode's real supports; ``other-class``: the support-reliance control."""


def other_class_specs(
    dataset: FSSDataset, specs: Sequence[EpisodeSpec], fold: int, seed: int, split: str = "val"
) -> list[EpisodeSpec]:
    """``specs`` with every episode's supports drawn from another class of ``fold`` (same count)."""
    by_class: dict[int, list[str]] = defaultdict(list)
    for e in dataset.entries(fold, split):
        if e.name not in by_class[e.class_id]:
            by_class[e.class_id].append(e.name)
    classes = sorted(by_class)
    if len(classes) < 2:
        raise UserError(
            f"the other-class support control needs two classes in fold {fold} '{split}', found {len(classes)}; "
            "drop 'other-class' from matrix.supports"
        )
    out = []
    for s in specs:
        rng = np.random.default_rng([int(seed), int(s.episode_id), 7919])
        others = [c for c in classes if c != s.class_id]
        k = len(s.supports)
        # a class with enough images besides the query; try them in a seeded order
        for c in [others[int(i)] for i in rng.permutation(len(others))]:
            pool = [n for n in by_class[c] if n != s.query]
            if len(pool) >= k:
                picks = rng.choice(len(pool), size=k, replace=False) if k else []
                out.append(replace(s, supports=tuple(pool[int(j)] for j in picks), support_class=c))
                break
        else:
            raise UserError(
                f"no other class of fold {fold} has {k} images for the other-class control of episode {s.episode_id}; "
                "use fewer shots"
            )
    return out
