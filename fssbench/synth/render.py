"""Rendering of synthetic scenes (numpy, scipy.ndimage and Pillow's polygon fill; no OpenCV).

Every random choice of an image comes from one ``np.random.default_rng(...)`` stream derived from
``(seed, stream, index)``, so an image depends on nothing but those three numbers: not on the
process that renders it, nor on the order images are rendered in.

Scenes are painted back to front on a float canvas. Each object is a shape polygon (unit
coordinates) scaled, stretched, rotated and rasterised at 2x supersampling (so edges are
anti-aliased), filled with its colour and texture in object coordinates, and alpha-composited.
An instance map records which labelled object is visible at each pixel (later objects occlude
earlier ones), which gives the label map and the 255 boundary band.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage
from PIL import Image, ImageDraw

from fssbench.synth.classes import (
    COLOURS,
    FOLD_KEYS,
    PRETRAIN_KEYS,
    ClassDef,
    fold_classes,
    pretrain_classes,
    sample_distractor,
)

IGNORE = 255
SPLIT_IDS: dict[str, int] = {"trn": 0, "val": 1}
PRETRAIN_STREAM = 7
MIN_SIDE, MAX_SIDE = 96, 160
MIN_CLASS_PIXELS = 48
"""A class is listed for an image only if at least this many of its pixels are labelled (not band)."""
MIN_VISIBLE_FRACTION = 0.55
"""Later objects may hide at most 45 % of an earlier labelled object."""

_COLOUR_NAMES = list(COLOURS)


# --------------------------------------------------------------------------------------------
# shapes: lists of (polygon [N, 2] as (x, y) in unit coordinates, additive?)
# --------------------------------------------------------------------------------------------
def _ngon(n: int, radius: float = 1.0, phase: float = 0.0, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([cx + radius * np.cos(a), cy + radius * np.sin(a)], axis=1)


@lru_cache(maxsize=None)
def shape_parts(shape: str) -> tuple[tuple[np.ndarray, bool], ...]:
    """Polygons that make up ``shape`` (unit size, centred near 0); ``False`` parts are cut out."""
    if shape == "circle":
        return ((_ngon(64, 0.95), True),)
    if shape == "square":
        return ((np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]]), True),)
    if shape == "triangle":
        return ((_ngon(3, 1.15, -np.pi / 2, cy=0.12), True),)
    if shape == "star":
        a = -np.pi / 2 + np.pi * np.arange(10) / 5
        rad = np.where(np.arange(10) % 2 == 0, 1.15, 0.48)
        return ((np.stack([rad * np.cos(a), rad * np.sin(a)], axis=1), True),)
    if shape == "cross":
        w, L = 0.34, 1.0
        pts = [(-w, -L), (w, -L), (w, -w), (L, -w), (L, w), (w, w), (w, L), (-w, L), (-w, w), (-L, w), (-L, -w), (-w, -w)]
        return ((np.array(pts, dtype=float), True),)
    if shape == "ring":
        return ((_ngon(64, 1.0), True), (_ngon(48, 0.52), False))
    if shape == "crescent":
        return ((_ngon(64, 1.0), True), (_ngon(64, 0.86, cx=0.48, cy=-0.1), False))
    if shape == "heart":
        t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return ((np.stack([x, y + 2.5], axis=1) / 15.0, True),)
    if shape == "arrow":
        pts = [(-1.0, -0.24), (0.15, -0.24), (0.15, -0.62), (1.05, 0.0), (0.15, 0.62), (0.15, 0.24), (-1.0, 0.24)]
        return ((np.array(pts), True),)
    if shape == "hexagon":
        return ((_ngon(6, 1.0), True),)
    if shape == "diamond":
        return ((np.array([[0.0, -1.1], [0.58, 0.0], [0.0, 1.1], [-0.58, 0.0]]), True),)
    if shape == "semicircle":
        a = np.linspace(0, np.pi, 40)
        return ((np.stack([np.cos(a), 0.45 - np.sin(a) * 1.0], axis=1) * [1.05, 1.0], True),)
    if shape == "trapezoid":
        return ((np.array([[-1.0, 0.55], [1.0, 0.55], [0.5, -0.55], [-0.5, -0.55]]), True),)
    if shape == "bowtie":
        return (
            (np.array([[-1.0, -0.8], [0.05, 0.0], [-1.0, 0.8]]), True),
            (np.array([[1.0, -0.8], [-0.05, 0.0], [1.0, 0.8]]), True),
        )
    if shape == "tee":
        pts = [(-1.0, -0.9), (1.0, -0.9), (1.0, -0.45), (0.26, -0.45), (0.26, 1.0), (-0.26, 1.0), (-0.26, -0.45), (-1.0, -0.45)]
        return ((np.array(pts), True),)
    if shape == "flower":
        a = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        rad = 0.72 + 0.33 * np.cos(5 * a)
        return ((np.stack([rad * np.cos(a), rad * np.sin(a)], axis=1), True),)
    raise ValueError(f"unknown shape {shape!r}")


# --------------------------------------------------------------------------------------------
# objects
# --------------------------------------------------------------------------------------------
@dataclass
class ObjectSpec:
    """One object's geometry and appearance (everything drawn from the image's rng)."""

    shape: str
    colour: str
    texture: str
    cy: float
    cx: float
    r: float
    theta: float
    aspect: float
    period: float
    phase: tuple[float, float]
    primary: np.ndarray
    secondary: np.ndarray
    shade: tuple[float, float]  # shading strength, shading direction


def _sample_appearance(
    rng: np.random.Generator, colour: str, texture: str, r: float
) -> tuple[float, tuple[float, float], np.ndarray, np.ndarray, tuple[float, float]]:
    """Texture period/phase, the two tones and the shading of one object.

    Patterned objects mix a light and a dark tone of their colour around the instance
    brightness, so that their mean colour matches a solid object's: the mean colour of an
    object says which colour it has, not which texture.
    """
    period = float(np.clip(r / rng.uniform(2.4, 3.4), 3.5, 10.0))
    phase = (float(rng.uniform()), float(rng.uniform()))
    base = np.asarray(COLOURS[colour], dtype=np.float32) * rng.uniform(0.72, 1.0)
    base = base + rng.normal(0.0, 6.0, 3).astype(np.float32)
    if texture == "solid":
        primary = secondary = base
    else:
        primary = base * rng.uniform(1.1, 1.3)
        secondary = base * rng.uniform(0.35, 0.55)
    shade = (float(rng.uniform(0.0, 0.16)), float(rng.uniform(0, 2 * np.pi)))
    return period, phase, np.clip(primary, 0, 255), np.clip(secondary, 0, 255), shade


def sample_object(
    rng: np.random.Generator,
    key: tuple[str, str, str],
    H: int,
    W: int,
    r_range: tuple[float, float],
    centre_box: tuple[float, float, float, float] | None = None,
) -> ObjectSpec:
    """Pose and appearance of an object of ``key``; ``r_range`` as fractions of the short side."""
    shape, colour, texture = key
    m = min(H, W)
    r = float(rng.uniform(*r_range) * m)
    if centre_box is None:
        margin = 0.55 * r
        cy = float(rng.uniform(margin, H - margin))
        cx = float(rng.uniform(margin, W - margin))
    else:
        y0, y1, x0, x1 = centre_box
        cy, cx = float(rng.uniform(y0, y1)), float(rng.uniform(x0, x1))
    theta = float(rng.uniform(0, 2 * np.pi))
    aspect = float(np.exp(rng.uniform(-0.22, 0.22)))
    period, phase, primary, secondary, shade = _sample_appearance(rng, colour, texture, r)
    return ObjectSpec(shape, colour, texture, cy, cx, r, theta, aspect, period, phase, primary, secondary, shade)


def _texture(texture: str, u: np.ndarray, v: np.ndarray, spec: ObjectSpec) -> np.ndarray:
    """Weight of the secondary tone in [0, 1] at object coordinates ``(u, v)`` (pixels)."""
    p = spec.period
    pu, pv = spec.phase
    if texture == "solid":
        return np.zeros_like(u)
    if texture == "stripes":
        return np.clip(0.5 + 1.6 * np.sin(2 * np.pi * (u / p + pu)), 0.0, 1.0)
    if texture == "wavy":
        w = u + 0.45 * p * np.sin(2 * np.pi * (v / (1.8 * p) + pv))
        return np.clip(0.5 + 1.6 * np.sin(2 * np.pi * (w / p + pu)), 0.0, 1.0)
    if texture == "dots":
        du = (u / p + pu) % 1.0 - 0.5
        dv = (v / p + pv) % 1.0 - 0.5
        d = np.sqrt(du * du + dv * dv) * p
        return np.clip(0.3 * p - d + 0.5, 0.0, 1.0)
    if texture == "checker":
        s = np.sin(np.pi * (u / p + pu)) * np.sin(np.pi * (v / p + pv))
        return np.clip(0.5 + 2.5 * s, 0.0, 1.0)
    if texture == "grid":
        du = np.abs((u / p + pu) % 1.0 - 0.5) * p
        dv = np.abs((v / p + pv) % 1.0 - 0.5) * p
        d = np.minimum(du, dv)
        return np.clip(d - 0.36 * p + 1.0, 0.0, 1.0)  # thin lines of the secondary tone
    if texture == "gradient":
        return np.clip(u / (1.7 * spec.r) + 0.5, 0.0, 1.0)
    raise ValueError(f"unknown texture {texture!r}")


def rasterise(spec: ObjectSpec) -> tuple[int, int, np.ndarray, np.ndarray]:
    """``(y0, x0, alpha, rgb)`` of ``spec`` on its (unclipped) bounding square."""
    sx, sy = np.sqrt(spec.aspect), 1.0 / np.sqrt(spec.aspect)
    c, s = np.cos(spec.theta), np.sin(spec.theta)
    R = int(np.ceil(spec.r * 1.2 * max(sx, sy))) + 2
    y0, x0 = int(round(spec.cy)) - R, int(round(spec.cx)) - R
    n = 2 * R + 1
    # rasterise at 2x (Pillow's scanline fill; sub-pixel (a, b) sits at image (y0 + (a - 0.5) / 2, ...))
    sub = Image.new("L", (2 * n, 2 * n), 0)
    draw = ImageDraw.Draw(sub)
    for poly, additive in shape_parts(spec.shape):
        px, py = poly[:, 0] * sx * spec.r, poly[:, 1] * sy * spec.r
        x = 2 * (spec.cx + c * px - s * py - x0) + 0.5
        y = 2 * (spec.cy + s * px + c * py - y0) + 0.5
        draw.polygon(list(zip(x.tolist(), y.tolist())), fill=255 if additive else 0)
    alpha = np.asarray(sub, dtype=np.float32).reshape(n, 2, n, 2).mean(axis=(1, 3)) * (1.0 / 255.0)
    # object coordinates of pixel centres
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    dy, dx = yy + (y0 - spec.cy), xx + (x0 - spec.cx)
    u = c * dx + s * dy
    v = -s * dx + c * dy
    t = _texture(spec.texture, u, v, spec)[..., None]
    rgb = (1.0 - t) * spec.primary + t * spec.secondary
    k, a = spec.shade
    shading = 1.0 + k * (np.cos(a) * u + np.sin(a) * v) / spec.r
    rgb = rgb * shading[..., None]
    return y0, x0, alpha, rgb


class Canvas:
    """A float RGB canvas plus the map of which object is visible where.

    ``inst`` holds the 1-based index of the visible object at each pixel (0 = background);
    ``objects[k - 1]`` is ``(key, class_id, area)`` of object ``k`` (``class_id`` 0: not labelled).
    """

    def __init__(self, img: np.ndarray) -> None:
        self.img = img
        self.H, self.W = img.shape[:2]
        self.inst = np.zeros((self.H, self.W), dtype=np.int16)
        self.objects: list[tuple[tuple[str, str, str], int, int]] = []

    def _crop(self, y0: int, x0: int, n: int) -> tuple[slice, slice, slice, slice]:
        ya, xa = max(0, y0), max(0, x0)
        yb, xb = min(self.H, y0 + n), min(self.W, x0 + n)
        return slice(ya, yb), slice(xa, xb), slice(ya - y0, yb - y0), slice(xa - x0, xb - x0)

    def try_draw(
        self,
        spec: ObjectSpec,
        class_id: int = 0,
        *,
        min_inside: float = 0.0,
        protect: bool = True,
        min_visible: float = MIN_VISIBLE_FRACTION,
    ) -> bool:
        """Draw ``spec`` unless it would hide more than ``1 - min_visible`` of a labelled object.

        ``class_id > 0`` makes it a labelled object; ``min_inside`` is the fraction of it that
        must lie inside the image. Returns whether it was drawn.
        """
        y0, x0, alpha, rgb = rasterise(spec)
        n = alpha.shape[0]
        full = alpha >= 0.5
        total = int(full.sum())
        if total == 0:
            return False
        ys, xs, ly, lx = self._crop(y0, x0, n)
        m = full[ly, lx]
        inside = int(m.sum())
        if inside == 0 or inside < min_inside * total:
            return False
        region = self.inst[ys, xs]
        if protect and self.objects:
            n_obj = len(self.objects) + 1
            hidden = np.bincount(region[m].ravel(), minlength=n_obj)
            hidden[0] = 0
            if hidden.any():
                visible = None
                for k in np.nonzero(hidden)[0]:
                    _, cid, area = self.objects[k - 1]
                    if cid == 0:
                        continue
                    if visible is None:
                        visible = np.bincount(self.inst.ravel(), minlength=n_obj)
                    if visible[k] - hidden[k] < min_visible * area:
                        return False
        a = alpha[ly, lx][..., None]
        self.img[ys, xs] = a * rgb[ly, lx] + (1.0 - a) * self.img[ys, xs]
        self.objects.append(((spec.shape, spec.colour, spec.texture), int(class_id), inside))
        region[m] = len(self.objects)
        return True

    def class_map(self) -> np.ndarray:
        """Class id of the visible object at each pixel (0: background or unlabelled object)."""
        lut = np.zeros(len(self.objects) + 1, dtype=np.uint8)
        lut[1:] = [cid for _, cid, _ in self.objects]
        return lut[self.inst]

    def labelled_instances(self) -> np.ndarray:
        """``inst`` with unlabelled objects set to 0."""
        return np.where(self.class_map() > 0, self.inst, 0).astype(np.int16)


# --------------------------------------------------------------------------------------------
# backgrounds, clutter, camera
# --------------------------------------------------------------------------------------------
def _interp_weights(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    pos = np.linspace(0, n_in - 1, n_out)
    i0 = np.clip(np.floor(pos).astype(np.intp), 0, n_in - 2)
    f = pos - i0
    f = (f * f * (3 - 2 * f)).astype(np.float32)  # smoothstep: no visible grid creases
    return i0, f


def smooth_noise(rng: np.random.Generator, H: int, W: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1] (a random ``cells x cells`` grid, smoothly interpolated).

    Plain gathers, no matrix products: BLAS threads in several worker processes would fight.
    """
    g = rng.uniform(0, 1, (cells, cells)).astype(np.float32)
    iy, fy = _interp_weights(H, cells)
    ix, fx = _interp_weights(W, cells)
    rows = g[iy] * (1 - fy)[:, None] + g[iy + 1] * fy[:, None]  # H x cells
    return rows[:, ix] * (1 - fx) + rows[:, ix + 1] * fx


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    c = rng.uniform(20, 235, 3)
    grey = c.mean()
    return (grey + (c - grey) * rng.uniform(0.15, 0.75)).astype(np.float32)


def background(rng: np.random.Generator, H: int, W: int) -> np.ndarray:
    """Textured, noisy background: two muted colours mixed by smooth noise, maybe a weak pattern."""
    c1, c2 = _muted_colour(rng), _muted_colour(rng)
    nz = smooth_noise(rng, H, W, int(rng.integers(3, 9)))[..., None]
    img = c1 * (1 - nz) + c2 * nz
    fine = smooth_noise(rng, H, W, int(rng.integers(12, 28))) - 0.5
    img = img + fine[..., None] * rng.uniform(10, 40)
    if rng.uniform() < 0.45:  # a faint pattern, so texture alone does not pop out
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        th = rng.uniform(0, np.pi)
        p = rng.uniform(4, 12)
        u = np.cos(th) * xx + np.sin(th) * yy
        v = -np.sin(th) * xx + np.cos(th) * yy
        kind = rng.integers(3)
        if kind == 0:
            pat = np.sin(2 * np.pi * u / p)
        elif kind == 1:
            pat = np.sign(np.sin(np.pi * u / p) * np.sin(np.pi * v / p))
        else:
            pat = np.sin(2 * np.pi * (u + 0.4 * p * np.sin(2 * np.pi * v / (2 * p))) / p)
        img = img + pat[..., None] * rng.uniform(6, 22)
    return img.astype(np.float32)


def _clutter_spec(rng: np.random.Generator, H: int, W: int) -> ObjectSpec:
    """One clutter item: a thin stroke or a small blob, any colour."""
    colour = _COLOUR_NAMES[rng.integers(len(_COLOUR_NAMES))]
    texture = "solid" if rng.uniform() < 0.7 else ("stripes", "dots", "checker")[rng.integers(3)]
    if rng.uniform() < 0.5:  # stroke: a thin rotated rectangle
        length = rng.uniform(0.1, 0.35) * min(H, W)
        width = rng.uniform(1.2, 3.0)
        spec = sample_object(rng, ("square", colour, "solid"), H, W, (0.05, 0.05))
        spec.r = float(np.sqrt(width * length) / 1.6)
        spec.aspect = float(width / length)
    else:
        shape = ("circle", "square", "triangle", "diamond")[rng.integers(4)]
        spec = sample_object(rng, (shape, colour, texture), H, W, (0.025, 0.06))
    return spec


MAX_CLUTTER_REDRAWS = 64


def draw_clutter(
    rng: np.random.Generator,
    canvas: Canvas,
    n: int,
    *,
    protect: bool = True,
    exclude: frozenset[tuple[str, str, str]] = frozenset(),
) -> None:
    """Thin strokes and small blobs (never labelled), some in fold-class colours.

    An item whose (shape, colour, texture) is in ``exclude`` is redrawn, so pretraining images
    (``exclude=FOLD_KEYS``) never show a fold class, not even as a small blob. With the default
    empty ``exclude`` the random stream is consumed exactly as without the option, which keeps
    the FSS world's bytes unchanged.
    """
    H, W = canvas.H, canvas.W
    for _ in range(n):
        spec = _clutter_spec(rng, H, W)
        redraws = 0
        while (spec.shape, spec.colour, spec.texture) in exclude:
            redraws += 1
            if redraws > MAX_CLUTTER_REDRAWS:  # pragma: no cover - needs exclude to cover ~all clutter
                raise ValueError("draw_clutter: exclude leaves (almost) no clutter to draw")
            spec = _clutter_spec(rng, H, W)
        canvas.try_draw(spec, 0, protect=protect)


def camera(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Global brightness/contrast/colour cast and sensor noise; returns uint8."""
    contrast = rng.uniform(0.85, 1.12)
    bright = rng.uniform(-12, 12)
    cast = rng.normal(0, 4, 3).astype(np.float32)
    mean = img.mean(axis=(0, 1), keepdims=True)
    out = (img - mean) * contrast + mean + bright + cast
    out = out + rng.normal(0, rng.uniform(2.0, 6.0), img.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def boundary_band(inst: np.ndarray) -> np.ndarray:
    """VOC-like ignore band (3 px) along the visible outline of every labelled instance.

    Pixels whose 3x3 neighbourhood holds two instance values (1 px each side of an edge between a
    labelled instance and anything else), widened by one more pixel on the unlabelled side.
    """
    edge = ndimage.maximum_filter(inst, size=3) != ndimage.minimum_filter(inst, size=3)
    outer = ndimage.binary_dilation(edge, structure=np.ones((3, 3), dtype=bool)) & (inst == 0)
    return edge | outer


# --------------------------------------------------------------------------------------------
# FSS images
# --------------------------------------------------------------------------------------------
@dataclass
class SynthImage:
    image: np.ndarray  # H x W x 3 uint8
    label: np.ndarray  # H x W uint8: 0 background, 1..20 class, 255 band / ignore
    classes: list[int]  # fold classes listed for this image (sorted)
    instances: np.ndarray  # H x W int16: 1-based index of the visible object (0 = background)
    objects: list[tuple[tuple[str, str, str], int, int]]  # per object: (shape, colour, texture), class id (0 = distractor/clutter), drawn area


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), SPLIT_IDS[split], int(index)])


def render_fss_image(seed: int, split: str, index: int) -> SynthImage:
    """Image ``index`` of ``split`` ("trn"/"val") for ``seed``: a pure function of the three."""
    rng = image_rng(seed, split, index)
    classes = fold_classes()
    H, W = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE + 1, size=2))
    canvas = Canvas(background(rng, H, W))
    draw_clutter(rng, canvas, int(rng.integers(2, 7)), protect=False)

    # 1-3 fold-class objects; the first cycles through the classes so every class gets its share
    n_cls = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
    cls_ids = [index % len(classes) + 1] + [int(rng.integers(1, len(classes) + 1)) for _ in range(n_cls - 1)]
    keys = {c.id: c.key for c in classes}
    items: list[tuple[int, tuple[str, str, str]]] = [(cid, keys[cid]) for cid in cls_ids]
    # distractors: look-alikes of present classes (share colour + shape or texture), of other
    # fold classes, or anything that is not a fold class
    for _ in range(int(rng.integers(2, 6))):
        u = rng.uniform()
        if u < 0.5:
            like = keys[cls_ids[int(rng.integers(len(cls_ids)))]]
        elif u < 0.75:
            like = keys[int(rng.integers(1, len(classes) + 1))]
        else:
            like = None
        items.append((0, sample_distractor(rng, like=like)))
    order = rng.permutation(len(items))
    for j in order:
        cid, key = items[j]
        is_first = j == 0
        r_range = (0.12, 0.26) if cid else (0.08, 0.24)
        for attempt in range(10):
            spec = sample_object(rng, key, H, W, r_range)
            relax = is_first and attempt == 9  # the guaranteed class object always gets drawn
            if canvas.try_draw(spec, cid, min_inside=0.75 if cid else 0.0, protect=not relax):
                break
    if rng.uniform() < 0.4:
        draw_clutter(rng, canvas, 1, protect=True)

    img = camera(rng, canvas.img)
    label = canvas.class_map()
    label[boundary_band(canvas.labelled_instances())] = IGNORE
    present = []
    counts = np.bincount(label.ravel(), minlength=256)
    for cid in range(1, len(classes) + 1):
        if counts[cid] >= MIN_CLASS_PIXELS:
            present.append(cid)
        elif counts[cid] > 0:
            label[label == cid] = IGNORE  # a sliver too small to count: don't care
    return SynthImage(img, label, present, canvas.inst, canvas.objects)


# --------------------------------------------------------------------------------------------
# pretraining images
# --------------------------------------------------------------------------------------------
_NON_PRETRAIN_DISTRACTORS = FOLD_KEYS | PRETRAIN_KEYS


def render_pretrain_scene(seed: int, index: int, size: int = 64) -> tuple[np.ndarray, int, Canvas]:
    """Pretraining image ``index`` of ``seed``: ``(image uint8, label, canvas)``.

    The canvas keeps every drawn object (``canvas.objects``: main object, distractors, clutter,
    occluder), so tests can check that none of them is a fold class: the zoo is pretrained
    without ever seeing a novel (or base) class of the FSS world.
    """
    rng = np.random.default_rng([int(seed), PRETRAIN_STREAM, int(index)])
    classes = pretrain_classes()
    label = int(rng.integers(len(classes)))
    cdef: ClassDef = classes[label]
    S = int(size)
    canvas = Canvas(background(rng, S, S))
    draw_clutter(rng, canvas, int(rng.integers(1, 4)), protect=False, exclude=FOLD_KEYS)
    for _ in range(int(rng.integers(1, 4))):  # distractors behind the main object
        key = sample_distractor(rng, like=cdef.key if rng.uniform() < 0.4 else None, exclude=_NON_PRETRAIN_DISTRACTORS)
        canvas.try_draw(sample_object(rng, key, S, S, (0.1, 0.2)), 0, protect=False)
    box = (0.35 * S, 0.65 * S, 0.35 * S, 0.65 * S)
    for attempt in range(10):
        spec = sample_object(rng, cdef.key, S, S, (0.26, 0.38), centre_box=box)
        if canvas.try_draw(spec, 1, min_inside=0.85 if attempt < 9 else 0.0):
            break
    if rng.uniform() < 0.5:  # a small occluder in front
        key = sample_distractor(rng, exclude=_NON_PRETRAIN_DISTRACTORS)
        canvas.try_draw(sample_object(rng, key, S, S, (0.08, 0.14)), 0, min_visible=0.75)
    return camera(rng, canvas.img), label, canvas


def render_pretrain_image(seed: int, index: int, size: int = 64) -> tuple[np.ndarray, int, np.ndarray]:
    """One pretraining image: ``(image [size,size,3] uint8, label, mask [size,size] uint8 {0,1})``."""
    img, label, canvas = render_pretrain_scene(seed, index, size)
    return img, label, (canvas.class_map() > 0).astype(np.uint8)


def render_pretrain_batch(seed: int, n: int, size: int = 64, start: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` pretraining images (indices ``start .. start+n-1`` of the ``seed`` stream).

    Returns ``images`` uint8 ``[n, size, size, 3]``, ``labels`` int64 ``[n]`` (index into
    ``pretrain_classes()``) and ``masks`` uint8 ``[n, size, size]`` (1 = the labelled object).
    Image ``i`` depends only on ``(seed, start + i, size)``.
    """
    if n < 0 or size < 16:
        raise ValueError("need n >= 0 and size >= 16")
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    masks = np.empty((n, size, size), dtype=np.uint8)
    for i in range(n):
        images[i], labels[i], masks[i] = render_pretrain_image(seed, start + i, size)
    return images, labels, masks
