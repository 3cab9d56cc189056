"""Sanity analyses of a few-shot world: is it solvable by colour alone?

They work on plain arrays (images + index labels), so they apply equally to the in-memory
renderer, to the files on disk, or to a deliberately broken variant (tests use one to show each
check can fail).

* ``colour_nearest_mean_accuracy``: a per-pixel colour-only classifier (nearest class-mean RGB)
  fit on half of the images, scored on the other half; balanced accuracy over the given classes.
* ``colour_twin_distances``: for each class, the RGB distance from its mean colour to the nearest
  mean colour of another class or of an unlabelled object (small = a colour twin exists).
* ``map_colour_prototype_miou``: the zero-training few-shot baseline, masked average pooling of
  per-pixel colour features on the support + cosine similarity on the query, thresholded at the
  best (oracle) threshold; HSNet-style mIoU over a fold's classes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fssbench.synth.render import IGNORE


def colour_nearest_mean_accuracy(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    class_ids: Sequence[int],
    *,
    max_pixels: int = 20000,
    seed: int = 0,
) -> tuple[float, dict[int, float]]:
    """Balanced per-pixel accuracy of nearest-class-mean RGB over ``class_ids`` (and per class).

    Even-indexed images fit the class means, odd-indexed images are scored.
    """
    rng = np.random.default_rng(seed)

    def pixels(part: range, c: int) -> np.ndarray:
        chunks = [images[i][labels[i] == c] for i in part]
        x = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, 3), np.float32)
        if len(x) > max_pixels:
            x = x[rng.choice(len(x), max_pixels, replace=False)]
        return x

    fit, test = range(0, len(images), 2), range(1, len(images), 2)
    ids = [c for c in class_ids if len(pixels(fit, c)) and len(pixels(test, c))]
    means = np.stack([pixels(fit, c).mean(0) for c in ids])
    per_class: dict[int, float] = {}
    for k, c in enumerate(ids):
        x = pixels(test, c)
        d = ((x[:, None, :] - means[None]) ** 2).sum(-1)
        per_class[c] = float((d.argmin(1) == k).mean())
    return float(np.mean(list(per_class.values()))), per_class


def colour_twin_distances(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    class_ids: Sequence[int],
    distractor_masks: Sequence[Sequence[np.ndarray]] = (),
    *,
    min_pixels: int = 60,
) -> dict[int, float]:
    """Per class: RGB distance from its mean colour to the nearest other class mean or distractor."""
    means: dict[int, np.ndarray] = {}
    for c in class_ids:
        px = [img[lab == c] for img, lab in zip(images, labels)]
        px = [p for p in px if len(p)]
        if px:
            means[c] = np.concatenate(px).astype(np.float64).mean(0)
    others: list[np.ndarray] = []
    for img, masks in zip(images, distractor_masks):
        for m in masks:
            if m.sum() >= min_pixels:
                others.append(img[m].astype(np.float64).mean(0))
    out: dict[int, float] = {}
    for c, mu in means.items():
        cands = [v for k, v in means.items() if k != c] + others
        out[c] = float(min(np.linalg.norm(mu - v) for v in cands)) if cands else float("inf")
    return out


def _colour_features(img: np.ndarray, kind: str) -> np.ndarray:
    x = img.astype(np.float32) / 255.0
    if kind == "rgb":
        return x - 0.5
    if kind == "rgb_centred":
        return x - x.reshape(-1, 3).mean(0)
    if kind == "chroma":
        s = x.sum(-1, keepdims=True) + 1e-3
        return np.concatenate([x / s - 1.0 / 3.0, (s - 1.5) / 6.0], axis=-1)
    raise ValueError(f"unknown colour feature {kind!r}")


COLOUR_FEATURES: tuple[str, ...] = ("rgb", "rgb_centred", "chroma")
THRESHOLDS: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995)


def map_colour_prototype_miou(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    image_classes: Sequence[Sequence[int]],
    class_ids: Sequence[int],
    *,
    episodes_per_class: int = 20,
    shots: int = 1,
    seed: int = 0,
    features: Sequence[str] = COLOUR_FEATURES,
    thresholds: Sequence[float] = THRESHOLDS,
) -> tuple[float, dict[str, object]]:
    """Best mIoU (over feature kinds and thresholds, i.e. an oracle-tuned baseline) of 1-/k-shot
    masked-average colour prototypes with cosine matching; IoU accumulated per class (HSNet)."""
    rng = np.random.default_rng(seed)
    ths = np.asarray(thresholds, dtype=np.float32)
    episodes: list[tuple[int, int, list[int]]] = []
    for c in class_ids:
        members = [i for i, cl in enumerate(image_classes) if c in cl]
        if len(members) <= shots:
            continue
        for e in range(min(episodes_per_class, len(members))):
            q = members[e]
            pool = [m for m in members if m != q]
            sup = [int(s) for s in rng.choice(pool, size=shots, replace=False)]
            episodes.append((c, q, sup))
    best = (-1.0, {})
    for kind in features:
        inter = np.zeros((len(class_ids), len(ths)))
        union = np.zeros((len(class_ids), len(ths)))
        feats = {}

        def f(i: int) -> np.ndarray:
            if i not in feats:
                feats[i] = _colour_features(images[i], kind)
            return feats[i]

        for c, q, sup in episodes:
            proto = np.concatenate([f(s)[labels[s] == c] for s in sup]).mean(0)
            fq = f(q)
            cos = (fq @ proto) / (np.linalg.norm(fq, axis=-1) * np.linalg.norm(proto) + 1e-6)
            valid = labels[q] != IGNORE
            gt = (labels[q] == c)[valid]
            pred = cos[valid][:, None] > ths[None]
            k = list(class_ids).index(c)
            inter[k] += (pred & gt[:, None]).sum(0)
            union[k] += (pred | gt[:, None]).sum(0)
        seen = union.sum(1) > 0
        miou = (inter[seen] / np.maximum(union[seen], 1)).mean(0)
        j = int(miou.argmax())
        if miou[j] > best[0]:
            best = (float(miou[j]), {"features": kind, "threshold": float(ths[j]), "episodes": len(episodes)})
    return best
