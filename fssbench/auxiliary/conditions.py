"""Control conditions of DifFSS-style generation, derived from a support's semantic mask.

Three conditions, as DifFSS's reference pipeline (ControlNet4FSS) builds them:

* ``mask`` -- the semantic mask as a colour map: the object painted in its class colour on black
  (ControlNet-seg reads ADE20K-coloured maps; the reference maps each class to an ADE20K colour by
  hand). Our default palette is our own, one fixed colour per class id; ``seg_palette`` (a JSON file
  ``{"<class id>": [r, g, b]}``) gives the reference's colours where a user has them.
* ``hed`` -- soft edges of the whole image (HED), multiplied by the object mask dilated once with a
  14 x 14 elliptical kernel (the reference's single dilation), so only the object and its rim
  carry edges.
* ``scribble`` -- that masked edge map binarised at > 127 (0 / 255), the reference's scribble.

The edge detector: the real HED network (:mod:`fssbench.auxiliary.hed`) when its weights file is
given; otherwise :func:`sobel_soft_edges`, a classical substitute (multi-scale smoothed Sobel
gradient magnitude), named as such in every record and report that uses it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage

from fssbench.errors import UserError

CONDITIONS: tuple[str, ...] = ("mask", "scribble", "hed")
"""Control conditions; ``none`` in a suite means no auxiliary supports."""

EdgeDetector = Callable[[np.ndarray], np.ndarray]
"""``H x W x 3 uint8 RGB -> H x W float32 in [0, 1]`` soft edges."""

CLASSICAL_EDGES = "sobel-soft (classical substitute for HED)"


def class_colour(class_id: int) -> tuple[int, int, int]:
    """Our fixed colour of a class id: a deterministic, well-separated, never-black RGB."""
    rng = np.random.default_rng([int(class_id), 20231]).integers(40, 256, size=3)
    return int(rng[0]), int(rng[1]), int(rng[2])


def load_palette(path: str | Path | None) -> dict[int, tuple[int, int, int]]:
    """``seg_palette``: ``{"<class id>": [r, g, b]}`` from a JSON file (``{}`` without one)."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise UserError(f"aux seg_palette file {p} not found; give a JSON file {{\"<class id>\": [r, g, b]}} or drop seg_palette")
    try:
        raw = json.loads(p.read_text())
        return {int(k): tuple(int(c) for c in v) for k, v in raw.items()}  # type: ignore[misc]
    except (ValueError, TypeError, AttributeError) as exc:
        raise UserError(f"aux seg_palette {p} is not a JSON mapping of class id -> [r, g, b] ({exc})") from None


def seg_condition(mask: np.ndarray, class_id: int, palette: dict[int, tuple[int, int, int]] | None = None) -> np.ndarray:
    """The ``mask`` condition: ``H x W x 3 uint8``, the object in its class colour on black."""
    colour = (palette or {}).get(int(class_id)) or class_colour(class_id)
    out = np.zeros((*mask.shape, 3), dtype=np.uint8)
    out[mask.astype(bool)] = np.asarray(colour, dtype=np.uint8)
    return out


def sobel_soft_edges(image: np.ndarray) -> np.ndarray:
    """Classical substitute for HED: the mean over three scales (sigma 1, 2, 4 px) of the Gaussian-
    smoothed Sobel gradient magnitude of the luminance, each scale divided by its 99th percentile,
    through ``1 - exp(-3 m)``: soft, thick edges in [0, 1] like HED's, without learned weights."""
    lum = image.astype(np.float32) @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32) / 255.0
    acc = np.zeros_like(lum)
    for sigma in (1.0, 2.0, 4.0):
        s = ndimage.gaussian_filter(lum, sigma)
        mag = np.hypot(ndimage.sobel(s, axis=0), ndimage.sobel(s, axis=1))
        ref = float(np.percentile(mag, 99))
        acc += mag / ref if ref > 1e-6 else mag
    m = acc / 3.0
    return (1.0 - np.exp(-3.0 * m)).astype(np.float32)


def ellipse_kernel(size: int = 14) -> np.ndarray:
    """An elliptical structuring element of ``size x size`` (as an OpenCV ``MORPH_ELLIPSE``)."""
    r = size / 2.0
    yy, xx = np.mgrid[0:size, 0:size]
    return (((yy + 0.5 - r) / r) ** 2 + ((xx + 0.5 - r) / r) ** 2) <= 1.0


def hed_condition(image: np.ndarray, mask: np.ndarray, edges: EdgeDetector) -> np.ndarray:
    """The ``hed`` condition: ``H x W x 3 uint8`` soft edges inside the once-dilated object mask."""
    e = np.clip(edges(image), 0.0, 1.0)
    keep = ndimage.binary_dilation(mask.astype(bool), structure=ellipse_kernel(14), iterations=1)
    m = np.round(e * keep * 255.0).astype(np.uint8)
    return np.repeat(m[..., None], 3, axis=2)


def scribble_condition(image: np.ndarray, mask: np.ndarray, edges: EdgeDetector) -> np.ndarray:
    """The ``scribble`` condition: the ``hed`` condition binarised at > 127 (0 / 255)."""
    h = hed_condition(image, mask, edges)
    return np.where(h.min(axis=2, keepdims=True) > 127, 255, 0).astype(np.uint8).repeat(3, axis=2)


def make_condition(
    name: str,
    image: np.ndarray,
    mask: np.ndarray,
    class_id: int,
    edges: EdgeDetector,
    palette: dict[int, tuple[int, int, int]] | None = None,
) -> np.ndarray:
    """The control map of ``name`` for one support (``H x W x 3 uint8``)."""
    if name == "mask":
        return seg_condition(mask, class_id, palette)
    if name == "hed":
        return hed_condition(image, mask, edges)
    if name == "scribble":
        return scribble_condition(image, mask, edges)
    raise UserError(f"unknown aux condition '{name}'; choose one of: {', '.join(CONDITIONS)}")
