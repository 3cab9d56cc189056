"""Tiny datasets in the exact official (HSNet) on-disk formats, for tests.

Each ``make_*_root(tmp, ...)`` writes into the folder ``tmp`` (which becomes the dataset root) and
returns it, so the three can share one root exactly like HSNet's ``Datasets_HSN`` folder:

* ``make_pascal_root``: ``VOC2012/JPEGImages/*.jpg``, palette ``VOC2012/SegmentationClassAug/*.png``
  (0 background, class ids, a 1-pixel 255 boundary around every object),
  ``VOC2012/ImageSets/Segmentation/{train,val}.txt`` and HSNet lists
  ``splits/pascal/{trn,val}/fold{0..3}.txt`` (``<name>__<CC>`` lines).
* ``make_coco_root``: ``COCO2014/{train2014,val2014}/*.jpg``, grayscale PNG masks under
  ``COCO2014/annotations/{train2014,val2014}/`` (value = 1-based class id), and HSNet pickle lists
  ``splits/coco/{trn,val}/fold{0..3}.pkl`` (dict: 0-based class -> ``"<subset>/<file>.jpg"`` list,
  all 80 keys, interleaved folds).
* ``make_fss_root``: ``FSS-1000/<class>/<N>.jpg`` + ``<N>.png`` (0/255 masks; RGB masks for some
  classes, as in the release) and ``splits/fss/{trn,val,test}.txt``.

Everything is deterministic (fixed seeds) and small enough to write in well under a second.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

PASCAL_SIZE = (24, 32)  # (height, width)
COCO_SIZE = (20, 24)
FSS_SIZE = (20, 20)

DEFAULT_FSS_SPLITS: dict[str, list[str]] = {
    # deliberately not sorted: HSNet sorts the classes it reads
    "trn": ["banana", "abacus", "cat", "apple"],
    "val": ["eagle", "dog"],
    "test": ["zucchini", "fox", "hotel_slipper"],
}


def voc_palette() -> list[int]:
    """The standard 256-colour PASCAL VOC palette (bit-interleaved colour map)."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def class_colour(class_id: int) -> tuple[int, int, int]:
    """A distinct, deterministic RGB colour per class id (for the object pixels of images)."""
    rng = np.random.default_rng(1000 + class_id)
    return tuple(int(v) for v in rng.integers(40, 256, size=3))  # type: ignore[return-value]


def _noise_image(size: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 40, size=(*size, 3), dtype=np.uint8)


def write_jpeg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, "RGB").save(path, format="JPEG", quality=92)


def write_palette_png(path: Path, mask: np.ndarray) -> None:
    """An indexed ('P') PNG with the VOC palette, as in SegmentationClassAug."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.frombytes("P", (mask.shape[1], mask.shape[0]), np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
    img.putpalette(voc_palette())
    img.save(path, format="PNG")


def write_gray_png(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), "L").save(path, format="PNG")


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def truncate_file(path: Path, keep: float = 0.5) -> None:
    """Cut a file to ``keep`` of its bytes (a corrupt, truncated JPEG/PNG)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: max(1, int(len(data) * keep))])


# --- PASCAL-5i -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PascalImage:
    name: str
    kind: str  # "trn" or "val"
    classes: tuple[int, ...]  # first = the big object on the left


def pascal_layout(n_classes: int = 20, trn_per_class: int = 2, val_per_class: int = 2) -> list[PascalImage]:
    """The images ``make_pascal_root`` writes: per class and kind, ``*_per_class`` images with
    that class; every second one also holds an object of the same position in the next fold."""
    per_fold = n_classes // 4
    out = []
    for kind, per, year in (("trn", trn_per_class, 2008), ("val", val_per_class, 2007)):
        idx = 0
        for c in range(1, n_classes + 1):
            for k in range(per):
                idx += 1
                second = (c - 1 + per_fold) % n_classes + 1
                classes = (c,) if k % 2 == 0 else (c, second)
                out.append(PascalImage(f"{year}_{idx:06d}", kind, classes))
    return out


def pascal_fold(class_id: int, n_classes: int = 20) -> int:
    return (class_id - 1) // (n_classes // 4)


def _pascal_arrays(img: PascalImage, size: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = size
    rgb = _noise_image(size, seed)
    mask = np.zeros(size, dtype=np.uint8)
    boxes = [(3, h - 8, 2, w // 2 - 2), (h // 2 - 2, h - 3, w // 2 + 2, w - 3)]
    for cid, (r0, r1, c0, c1) in zip(img.classes, boxes):
        rgb[r0:r1, c0:c1] = class_colour(cid)
        mask[r0:r1, c0:c1] = 255  # boundary ring ...
        mask[r0 + 1 : r1 - 1, c0 + 1 : c1 - 1] = cid  # ... around the object
    return rgb, mask


def make_pascal_root(
    tmp: str | Path,
    *,
    n_classes: int = 20,
    trn_per_class: int = 2,
    val_per_class: int = 2,
    size: tuple[int, int] = PASCAL_SIZE,
    with_splits: bool = True,
    with_image_sets: bool = True,
    class_names: dict[int, str] | None = None,
) -> Path:
    """Write a PASCAL-5i root (see module doc) into ``tmp`` and return it.

    ``class_names`` writes ``classes.txt`` (needed when ``n_classes != 20``).
    """
    root = Path(tmp)
    voc = root / "VOC2012"
    layout = pascal_layout(n_classes, trn_per_class, val_per_class)
    for i, img in enumerate(layout):
        rgb, mask = _pascal_arrays(img, size, seed=i)
        write_jpeg(voc / "JPEGImages" / f"{img.name}.jpg", rgb)
        write_palette_png(voc / "SegmentationClassAug" / f"{img.name}.png", mask)
    if with_image_sets:
        sets = voc / "ImageSets" / "Segmentation"
        _write_lines(sets / "train.txt", sorted(i.name for i in layout if i.kind == "trn"))
        _write_lines(sets / "val.txt", sorted(i.name for i in layout if i.kind == "val"))
    if class_names is not None:
        _write_lines(root / "classes.txt", [f"{k} {v}" for k, v in sorted(class_names.items())])
    elif n_classes != 20:
        _write_lines(root / "classes.txt", [f"{k} class{k}" for k in range(1, n_classes + 1)])
    if with_splits:
        lines: dict[tuple[str, int], list[tuple[str, int]]] = {(k, f): [] for k in ("trn", "val") for f in range(4)}
        for img in layout:
            for c in img.classes:
                lines[(img.kind, pascal_fold(c, n_classes))].append((img.name, c))
        for (kind, fold), items in lines.items():
            _write_lines(
                root / "splits" / "pascal" / kind / f"fold{fold}.txt", [f"{n}__{c:02d}" for n, c in sorted(items)]
            )
    return root


# --- COCO-20i --------------------------------------------------------------------------------


def coco_layout(
    train_per_class: int = 2, val_per_class: int = 2, n_classes: int = 80
) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    """``subset -> [(file stem, classes)]``: each image holds a block of 4 consecutive classes
    (one per interleaved fold), ``*_per_class`` images per block."""
    out: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    for subset, per, base in (("train2014", train_per_class, 1), ("val2014", val_per_class, 500000)):
        items = []
        idx = base
        for block in range(n_classes // 4):
            for _ in range(per):
                items.append((f"COCO_{subset}_{idx:012d}", tuple(range(4 * block + 1, 4 * block + 5))))
                idx += 1
        out[subset] = items
    return out


def _coco_arrays(classes: tuple[int, ...], size: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = size
    rgb = _noise_image(size, seed)
    mask = np.zeros(size, dtype=np.uint8)
    quads = [(0, h // 2, 0, w // 2), (0, h // 2, w // 2, w), (h // 2, h, 0, w // 2), (h // 2, h, w // 2, w)]
    for cid, (r0, r1, c0, c1) in zip(classes, quads):
        rgb[r0 + 1 : r1 - 1, c0 + 1 : c1 - 1] = class_colour(cid)
        mask[r0 + 1 : r1 - 1, c0 + 1 : c1 - 1] = cid
    return rgb, mask


def make_coco_root(
    tmp: str | Path,
    *,
    train_per_class: int = 2,
    val_per_class: int = 2,
    size: tuple[int, int] = COCO_SIZE,
    with_splits: bool = True,
) -> Path:
    """Write a COCO-20i root (see module doc) into ``tmp`` and return it."""
    root = Path(tmp)
    base = root / "COCO2014"
    layout = coco_layout(train_per_class, val_per_class)
    by_class: dict[str, dict[int, list[str]]] = {}
    seed = 0
    for subset, items in layout.items():
        by_class[subset] = {c: [] for c in range(1, 81)}
        for stem, classes in items:
            rgb, mask = _coco_arrays(classes, size, seed)
            seed += 1
            write_jpeg(base / subset / f"{stem}.jpg", rgb)
            write_gray_png(base / "annotations" / subset / f"{stem}.png", mask)
            for c in classes:
                by_class[subset][c].append(f"{subset}/{stem}.jpg")
    if with_splits:
        for fold in range(4):
            trn = {c - 1: (v if (c - 1) % 4 != fold else []) for c, v in by_class["train2014"].items()}
            val = {c - 1: (v if (c - 1) % 4 == fold else []) for c, v in by_class["val2014"].items()}
            for kind, payload in (("trn", trn), ("val", val)):
                path = root / "splits" / "coco" / kind / f"fold{fold}.pkl"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(pickle.dumps(payload, protocol=3))
    return root


# --- FSS-1000 --------------------------------------------------------------------------------


def make_fss_root(
    tmp: str | Path,
    *,
    splits: dict[str, list[str]] | None = None,
    n_images: int = 3,
    size: tuple[int, int] = FSS_SIZE,
    with_splits: bool = True,
    rgb_mask_classes: tuple[str, ...] = ("zucchini",),
) -> Path:
    """Write an FSS-1000 root (see module doc) into ``tmp`` and return it.

    ``splits`` maps ``trn``/``val``/``test`` to class folder names (default ``DEFAULT_FSS_SPLITS``);
    every class gets images ``1.jpg .. <n_images>.jpg`` with 0/255 masks.
    """
    root = Path(tmp)
    splits = splits if splits is not None else DEFAULT_FSS_SPLITS
    h, w = size
    seed = 0
    for kind in ("trn", "val", "test"):
        for cls in splits.get(kind, []):
            for n in range(1, n_images + 1):
                rgb = _noise_image(size, seed)
                mask = np.zeros(size, dtype=np.uint8)
                r0, c0 = 2 + n % 3, 3 + seed % 4
                mask[r0 : r0 + h // 2, c0 : c0 + w // 2] = 255
                rgb[mask > 0] = (200, 100 + 10 * (seed % 10), 50)
                seed += 1
                folder = root / "FSS-1000" / cls
                write_jpeg(folder / f"{n}.jpg", rgb)
                if cls in rgb_mask_classes:
                    folder.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(np.stack([mask] * 3, axis=-1), "RGB").save(folder / f"{n}.png")
                else:
                    write_gray_png(folder / f"{n}.png", mask)
    if with_splits:
        for kind in ("trn", "val", "test"):
            _write_lines(root / "splits" / "fss" / f"{kind}.txt", list(splits.get(kind, [])))
    return root
