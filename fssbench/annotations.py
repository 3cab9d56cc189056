"""Support annotations of every kind, derived deterministically from the support mask.

``derive_annotation(kind, mask, ignore)`` turns a binary class mask (and the image's ignore
map) into the :class:`~fssbench.episode.SupportAnnotation` a user with that kind of annotation
would give. Nothing here is random: the same mask always gives the same annotation, in any
process (for given numpy/scipy/scikit-image versions).

Kinds
-----
``mask``
    ``fg = mask`` (minus ignore), ``bg = ~mask`` outside ignore.
``bbox``
    The BAM-family protocol (chunbolang/BAM ``util/get_weak_anns.py``, reused by DifFSS-BAM,
    DCP, HPA, SCCAN, ...): label the binary mask into **8-connected** components, and for each
    component fill the rectangle from its top-left corner ``(x, y)`` to ``(x + w, y + h)``
    *inclusive*, where ``w``/``h`` are the component's width/height. Because that end point is
    inclusive (``cv2.rectangle``), every box is one pixel larger than the component on the
    right and on the bottom, clipped to the image. ``fg`` is the union of the boxes; the
    ignore pixels are re-imposed afterwards (removed from ``fg``), exactly as BAM writes 255
    back after drawing; ``bg`` is everything outside the boxes and outside ignore.
``scribble``
    A foreground scribble plus a background scribble from :func:`scribble_robot`, our own
    modern re-implementation of the DAVIS-2018 / PANet ``ScribblesRobot`` (see its docstring).
    ``fg`` lies inside ``mask`` minus ignore; ``bg`` lies inside the background kept at least
    ``margin`` pixels away from the object and from ignore pixels (:func:`background_region`).
``image`` / ``text``
    No pixel annotation: ``fg = bg = None``.

All returned ``fg``/``bg`` arrays are ``uint8`` {0, 1}; ``ignore`` is a ``bool`` copy.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, dijkstra, minimum_spanning_tree
from skimage.morphology import skeletonize

from fssbench.episode import ANNOTATION_KINDS, SupportAnnotation
from fssbench.errors import UserError

__all__ = [
    "derive_annotation",
    "component_boxes",
    "bbox_fill",
    "scribble_robot",
    "background_region",
    "fg_scribble",
    "bg_scribble",
    "SCRIBBLE_DEFAULTS",
]

_EIGHT = np.ones((3, 3), dtype=bool)
_NOT_ADJACENT = 1.5  # distance > 1.5 px <=> not 8-adjacent

SCRIBBLE_DEFAULTS: dict[str, float] = {
    "kernel_size": 0.15,  # opening radius = min(kernel_size * sqrt(area) / 2, max_kernel_radius)
    "max_kernel_radius": 16.0,
    "min_nodes": 4,  # skeleton trees shorter than this many pixels are dropped
    "smooth": 2,  # half-width of the moving average along the path (window 2*smooth+1)
    "thickness": 1,  # 3x3 dilations applied to the 1-px scribble
}
"""The robot's parameters; the first three are the DAVIS/PANet robot's defaults."""


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------
def derive_annotation(kind: str, mask: np.ndarray, ignore: np.ndarray | None = None) -> SupportAnnotation:
    """The support annotation of ``kind`` for a binary ``mask`` (H x W, {0, 1}).

    ``ignore`` (H x W bool, or ``None`` for no ignore pixels) marks unlabelled pixels; they
    are never part of ``fg`` or ``bg``. Raises :class:`~fssbench.errors.UserError` for an
    unknown ``kind``.
    """
    if kind not in ANNOTATION_KINDS:
        raise UserError(f"unknown annotation kind '{kind}'; choose one of: {', '.join(ANNOTATION_KINDS)}")
    m, ign = _as_mask_and_ignore(mask, ignore)
    if kind in ("image", "text"):
        return SupportAnnotation(kind=kind, fg=None, bg=None, ignore=ign)
    keep = ~ign
    if kind == "mask":
        fg = m & keep
        bg = ~m & keep
    elif kind == "bbox":
        box = bbox_fill(m)
        fg = box & keep
        bg = ~box & keep
    else:  # scribble
        fg = fg_scribble(m, ign)
        bg = bg_scribble(m, ign)
    return SupportAnnotation(kind=kind, fg=fg.astype(np.uint8), bg=bg.astype(np.uint8), ignore=ign)


def _as_mask_and_ignore(mask: np.ndarray, ignore: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D (H x W), got shape {m.shape}")
    m = m != 0
    if ignore is None:
        ign = np.zeros(m.shape, dtype=bool)
    else:
        ign = np.array(ignore, dtype=bool, copy=True)
        if ign.shape != m.shape:
            raise ValueError(f"ignore shape {ign.shape} does not match mask shape {m.shape}")
    return m, ign


# --------------------------------------------------------------------------------------------
# bbox (BAM protocol)
# --------------------------------------------------------------------------------------------
def component_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """BAM boxes of the 8-connected components of ``mask``, in label (raster) order.

    Each box is ``(y0, x0, y1, x1)`` with *exclusive* ends, i.e. it covers rows ``y0..y1-1``
    and columns ``x0..x1-1``. With the component spanning columns ``x..x+w-1`` the box spans
    ``x..x+w`` (one extra column on the right; one extra row at the bottom likewise), clipped
    to the image, as ``cv2.rectangle(mask, (x, y), (x + w, y + h), 1, -1)`` does in BAM.
    """
    m = np.asarray(mask) != 0
    h, w = m.shape
    labels, n = ndimage.label(m, structure=_EIGHT)
    boxes = []
    for sl in ndimage.find_objects(labels, max_label=n):
        if sl is None:  # pragma: no cover - labels are consecutive
            continue
        ys, xs = sl
        boxes.append((ys.start, xs.start, min(ys.stop + 1, h), min(xs.stop + 1, w)))
    return boxes


def bbox_fill(mask: np.ndarray) -> np.ndarray:
    """Union of the filled BAM boxes of ``mask`` (bool, H x W); see :func:`component_boxes`."""
    out = np.zeros(np.asarray(mask).shape, dtype=bool)
    for y0, x0, y1, x1 in component_boxes(mask):
        out[y0:y1, x0:x1] = True
    return out


# --------------------------------------------------------------------------------------------
# scribbles
# --------------------------------------------------------------------------------------------
def fg_scribble(mask: np.ndarray, ignore: np.ndarray | None = None, **params: float) -> np.ndarray:
    """Foreground scribble: :func:`scribble_robot` on ``mask & ~ignore`` (bool, inside it)."""
    m, ign = _as_mask_and_ignore(mask, ignore)
    return scribble_robot(m & ~ign, **params)


def background_region(mask: np.ndarray, ignore: np.ndarray | None = None, margin: float | None = None) -> np.ndarray:
    """Where the background scribble may go (bool).

    The background ``~mask & ~ignore`` restricted to pixels farther than ``margin`` from every
    object or ignore pixel, so that the scribble stays clear of the object boundary (and of
    PASCAL's 255 boundary band around it). ``margin`` defaults to 2% of the image diagonal,
    at least 2 px (12 px for a 500 x 375 image). If nothing is that far, the margin is halved
    (down to 1.5 px: not even diagonally adjacent to the object or ignore) until something
    is; if nothing is, it is the plain background ``~mask & ~ignore``.
    """
    m, ign = _as_mask_and_ignore(mask, ignore)
    free = ~m & ~ign
    if not free.any():
        return free
    blocked = m | ign
    if not blocked.any():
        return free
    if margin is None:
        margin = max(2.0, 0.02 * math.hypot(*m.shape))
    dist = ndimage.distance_transform_edt(~blocked)
    margin = max(float(margin), _NOT_ADJACENT)
    while True:
        cand = free & (dist > margin)
        if cand.any() or margin <= _NOT_ADJACENT:
            break
        margin = max(margin / 2.0, _NOT_ADJACENT)
    return cand if cand.any() else free


def bg_scribble(
    mask: np.ndarray, ignore: np.ndarray | None = None, margin: float | None = None, **params: float
) -> np.ndarray:
    """Background scribble: :func:`scribble_robot` on :func:`background_region`."""
    return scribble_robot(background_region(mask, ignore, margin), **params)


def scribble_robot(
    region: np.ndarray,
    *,
    kernel_size: float = SCRIBBLE_DEFAULTS["kernel_size"],
    max_kernel_radius: float = SCRIBBLE_DEFAULTS["max_kernel_radius"],
    min_nodes: int = int(SCRIBBLE_DEFAULTS["min_nodes"]),
    smooth: int = int(SCRIBBLE_DEFAULTS["smooth"]),
    thickness: int = int(SCRIBBLE_DEFAULTS["thickness"]),
) -> np.ndarray:
    """A deterministic scribble inside ``region`` (bool H x W), in the spirit of the
    DAVIS-2018 interactive robot that PANet ships as ``util/scribbles.py``.

    1. Every 8-connected component (object) of the region is opened with a Euclidean disk of
       its own radius ``r = min(kernel_size * sqrt(area) / 2, max_kernel_radius)``, ``area``
       being the component's (the DAVIS robot works per object; PANet's port applies it to the
       whole class mask, whose larger radius can wipe out the smaller instances). Erosion and dilation are
       computed with distance transforms; the image border counts as outside. If a
       component's opening is empty its ``r`` shrinks by x0.9 while ``r > 1``; a component
       still empty after that (a 1-2 px thin structure) is kept as it is.
    2. Skeleton of the opened region (``skimage.morphology.skeletonize``, Zhang thinning: no
       random tie-breaking, unlike ``medial_axis`` without a seed), taken for each component
       on the pixel grid of step ``max(1, floor(r / 4))`` for speed (the opened component is
       >= 2r wide everywhere, so that grid still samples it densely); path coordinates are
       scaled back.
    3. Graph over skeleton pixels with 8-neighbour edges (weight 1 or sqrt 2), i.e. PANet's
       radius-sqrt(2) neighbour graph; cycles are broken with a minimum spanning tree.
    4. Every tree spanning at least ``min_nodes`` pixels (``ceil(min_nodes / step)`` grid
       nodes) contributes its longest path, found by the double sweep (farthest node from an
       arbitrary node, then farthest node from that one), all trees at once through a
       virtual root.
    5. The path is smoothed with a moving average of ``2 * smooth + 1`` points (PANet uses a
       Bezier curve; a local average cannot cut across a non-convex shape), resampled every
       half pixel, rounded (a 1-px line) and clipped to the region.
    6. ``thickness`` 3x3 dilations, clipped to the region, so the scribble survives resizing.

    Guarantees: the result is a subset of ``region`` and non-empty whenever ``region`` is
    (a region whose skeleton has no tree of ``min_nodes`` pixels falls back to its most
    interior pixel, the first maximum of its distance transform, dilated as above). Pixels
    are processed in raster order throughout, so the output is a pure function of the input.
    """
    region = np.asarray(region) != 0
    out = np.zeros(region.shape, dtype=bool)
    if not region.any():
        return out
    # Work on the bounding box of the region plus a 1-px frame of "outside" (this is also what
    # makes the image border count as outside).
    ys, xs = np.nonzero(region.any(axis=1))[0], np.nonzero(region.any(axis=0))[0]
    y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
    sub = np.pad(region[y0:y1, x0:x1], 1)

    line = _scribble_line(sub, kernel_size, max_kernel_radius, min_nodes, smooth)
    if thickness > 0 and line.any():
        line = ndimage.binary_dilation(line, structure=_EIGHT, iterations=int(thickness)) & sub
    out[y0:y1, x0:x1] = line[1:-1, 1:-1]
    return out


def _scribble_line(sub: np.ndarray, kernel_size: float, max_r: float, min_nodes: int, smooth: int) -> np.ndarray:
    """The 1-px scribble of a padded region (steps 1-5 of :func:`scribble_robot`)."""
    opened, labels, step_of = _open_per_component(sub, kernel_size, max_r)
    steps = sorted(set(step_of[1:].tolist()))
    path_mask = np.zeros(sub.shape, dtype=bool)
    for step in steps:
        part = opened if len(steps) == 1 else opened & (step_of == step)[labels]
        # ``min_nodes`` is a length in full-resolution pixels; a grid node stands for ``step``
        for path in _longest_paths(skeletonize(part[::step, ::step]), max(1, math.ceil(min_nodes / step))):
            path = path * step
            pts = _smooth(path.astype(np.float64), smooth)
            drawn = _rasterize(pts, sub.shape) & sub
            if not drawn.any():  # pragma: no cover - smoothing never leaves a path entirely
                drawn[path[:, 0], path[:, 1]] = True
            path_mask |= drawn
    if not path_mask.any():
        # too small for a path: the region's most interior pixel (first maximum, raster order)
        inside = ndimage.distance_transform_edt(sub)
        path_mask[np.unravel_index(int(np.argmax(inside)), inside.shape)] = True
    return path_mask


def _open_per_component(sub: np.ndarray, kernel_size: float, max_r: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Opening of every 8-connected component of ``sub`` with its own disk (step 1), the
    component labels, and the skeleton grid step of every label (index 0: background)."""
    labels, n = ndimage.label(sub, structure=_EIGHT)
    inside = ndimage.distance_transform_edt(sub)  # distance to the nearest outside pixel
    flat = np.flatnonzero(sub)
    lab = labels.ravel()[flat]
    ins = inside.ravel()[flat]
    area = np.bincount(lab, minlength=n + 1)
    radius = np.minimum(kernel_size * np.sqrt(area) * 0.5, max_r)
    radius[0] = np.inf

    def survives(sel: np.ndarray) -> np.ndarray:
        lab_s = lab[sel]
        return np.bincount(lab_s[ins[sel] > radius[lab_s]], minlength=n + 1) > 0

    alive = survives(np.ones(lab.size, dtype=bool))
    while True:  # shrink the disk of every component whose opening is empty
        shrink = ~alive & (radius > 1.0)
        shrink[0] = False
        if not shrink.any():
            break
        radius[shrink] *= 0.9
        alive |= survives(shrink[lab]) & shrink
    alive[0] = False

    # erosion (closed disk of radius r) and dilation of the eroded set by the same disk, per
    # component: a pixel is kept if its nearest core pixel belongs to its own component and
    # lies within that component's radius. (If another component's core is nearer, the pixel
    # may be dropped: the result can only shrink, never leave the region.)
    radius[~alive] = np.inf  # dead components (and the background) have no core
    r_map = radius[labels]
    core = inside > r_map
    opened = np.zeros(sub.shape, dtype=bool)
    if core.any():
        dist, (iy, ix) = ndimage.distance_transform_edt(~core, return_indices=True)
        opened = (dist <= r_map) & (labels[iy, ix] == labels) & sub
    dead = np.zeros(n + 1, dtype=bool)
    dead[1:] = ~alive[1:]
    opened |= dead[labels]  # a component too thin for any disk is kept as it is
    # Every part of an opened component is >= 2r wide, so a grid of step r/4 still samples it
    # densely: its skeleton is taken on that grid (thinning cost grows with r and area).
    step = np.ones(n + 1, dtype=np.int64)
    step[alive] = np.maximum(1, (radius[alive] // 4).astype(np.int64))
    return opened, labels, step


def _longest_paths(skel: np.ndarray, min_nodes: int) -> list[np.ndarray]:
    """Longest path (as ``(k, 2)`` int pixel coords) of every skeleton tree worth keeping."""
    ys, xs = np.nonzero(skel)
    n = ys.size
    if n == 0:
        return []
    h, w = skel.shape
    index = np.full((h + 2, w + 2), -1, dtype=np.int64)
    index[ys + 1, xs + 1] = np.arange(n)
    rows, cols, wts = [], [], []
    node = np.arange(n)
    for dy, dx, wt in ((0, 1, 1.0), (1, -1, math.sqrt(2.0)), (1, 0, 1.0), (1, 1, math.sqrt(2.0))):
        nb = index[ys + 1 + dy, xs + 1 + dx]
        ok = nb >= 0
        rows.append(node[ok])
        cols.append(nb[ok])
        wts.append(np.full(int(ok.sum()), wt))
    graph = coo_matrix(
        (np.concatenate(wts), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    ).tocsr()
    tree = minimum_spanning_tree(graph)
    ncomp, labels = connected_components(tree, directed=False)
    sizes = np.bincount(labels, minlength=ncomp)
    keep = np.nonzero(sizes >= min_nodes)[0]
    if keep.size == 0:
        return []  # too small for a path: the caller falls back to the most interior pixel
    first = np.full(ncomp, n, dtype=np.int64)
    np.minimum.at(first, labels, node)  # lowest (raster-first) node of each tree

    def sweep(starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # virtual root n linked to one start node per kept tree; distances inside a tree are
        # offset by the same constant 1, which does not change the farthest node.
        root = np.full(starts.size, n)
        t = tree.tocoo()
        g = coo_matrix(
            (np.concatenate([t.data, np.ones(starts.size)]), (np.concatenate([t.row, root]), np.concatenate([t.col, starts]))),
            shape=(n + 1, n + 1),
        ).tocsr()
        dist, pred = dijkstra(g, directed=False, indices=n, return_predecessors=True)
        dist = dist[:n]
        reach = np.isfinite(dist)
        # farthest node per tree; ties -> lowest index (lexsort: last key is primary)
        order = np.lexsort((node, -np.where(reach, dist, -1.0), labels))
        lab_sorted = labels[order]
        head = np.ones(n, dtype=bool)
        head[1:] = lab_sorted[1:] != lab_sorted[:-1]
        far = np.full(ncomp, -1, dtype=np.int64)
        far[lab_sorted[head]] = order[head]
        return far[keep], pred

    a, _ = sweep(first[keep])
    b, pred = sweep(a)
    paths = []
    for end in b:
        seq = [int(end)]
        p = int(pred[end])
        while p != n and p >= 0:
            seq.append(p)
            p = int(pred[p])
        idx = np.asarray(seq[::-1], dtype=np.int64)
        paths.append(np.stack([ys[idx], xs[idx]], axis=1))
    return paths


def _smooth(pts: np.ndarray, half: int) -> np.ndarray:
    if half <= 0 or len(pts) < 3:
        return pts
    size = min(2 * half + 1, len(pts) if len(pts) % 2 else len(pts) - 1)
    return ndimage.uniform_filter1d(pts, size=size, axis=0, mode="nearest")


def _rasterize(pts: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels of the polyline through ``pts`` (float y, x), sampled every half pixel."""
    out = np.zeros(shape, dtype=bool)
    if len(pts) == 1:
        samples = pts
    else:
        seg = np.hypot(*np.diff(pts, axis=0).T)
        arc = np.concatenate([[0.0], np.cumsum(seg)])
        t = np.append(np.arange(0.0, arc[-1], 0.5), arc[-1])
        samples = np.stack([np.interp(t, arc, pts[:, 0]), np.interp(t, arc, pts[:, 1])], axis=1)
    yx = np.rint(samples).astype(np.int64)
    yx[:, 0] = np.clip(yx[:, 0], 0, shape[0] - 1)
    yx[:, 1] = np.clip(yx[:, 1], 0, shape[1] - 1)
    out[yx[:, 0], yx[:, 1]] = True
    return out
