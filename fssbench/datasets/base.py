"""The dataset interface every loader implements, and the dataset registry.

A dataset knows its on-disk layout, its classes and its folds. It hands out (image, class)
entries per fold and split and loads images and binary labels at original resolution. It does
not sample episodes (``fssbench.episodes``) or resize (``fssbench.protocols``).

Splits follow the HSNet lists: ``entries(fold, "trn")`` are training images of the fold's
*base* classes, ``entries(fold, "val")`` are test images of the fold's *novel* classes, and
``entries(fold, "baseval")`` are held-out images of base classes used for model selection, so that
no model is ever chosen on the test fold.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar

import numpy as np

from fssbench.datasets.io import read_index_mask, read_rgb
from fssbench.errors import DataError, UserError

if TYPE_CHECKING:  # pragma: no cover
    from fssbench.datasets.check import ScanProgress
    from fssbench.datasets.splits import SplitBuild

IGNORE_INDEX = 255
SPLITS: tuple[str, ...] = ("trn", "val", "baseval")


@dataclass(frozen=True)
class Entry:
    """One image paired with one class it contains (``name`` is the dataset's image id)."""

    name: str
    class_id: int


class FSSDataset(ABC):
    """Base class of PASCAL-5i, COCO-20i, FSS-1000 (and anything a user registers)."""

    name: ClassVar[str]
    n_folds: ClassVar[int]
    sampling: ClassVar[str] = "query_cycle"
    """``query_cycle``: queries walk the (fixed-order) split list, HSNet's PASCAL/FSS rule.
    ``class_uniform``: draw a class uniformly, then a query of it, HSNet's COCO rule."""

    def __init__(self, root: str | Path, *, split_dir: str | Path | None = None, **options: object) -> None:
        self.root = Path(root)
        self.split_dir = Path(split_dir) if split_dir is not None else None
        self.options = dict(options)

    # --- classes and folds -------------------------------------------------
    @property
    @abstractmethod
    def class_names(self) -> dict[int, str]:
        """1-based class id -> human-readable name (usable in ``a photo of a {name}``)."""

    @abstractmethod
    def fold_classes(self, fold: int) -> list[int]:
        """Novel (test) class ids of ``fold``; every other class is a base class of it."""

    def base_classes(self, fold: int) -> list[int]:
        novel = set(self.fold_classes(fold))
        return [c for c in sorted(self.class_names) if c not in novel]

    def check_fold(self, fold: int) -> None:
        if not 0 <= fold < self.n_folds:
            raise UserError(f"{self.name} has folds 0..{self.n_folds - 1}, not {fold}; pass --fold between them")

    # --- split lists -------------------------------------------------------
    def write_split_lists(
        self, out_dir: Path, *, force: bool = False, progress: "ScanProgress | None" = None, workers: int | None = None
    ) -> "SplitBuild":
        """Build this dataset's split lists in ``out_dir`` from its data (``fssbench data splits``);
        each dataset with a split rule overrides this (the rules: ``fssbench.datasets.splits``)."""
        raise UserError(f"no split-building rule for dataset '{self.name}'; write its lists by hand")

    # --- entries -----------------------------------------------------------
    @abstractmethod
    def entries(self, fold: int, split: str) -> list[Entry]:
        """Entries of ``split`` (one of ``SPLITS``) for ``fold``, in a fixed, documented order."""

    # --- loading -----------------------------------------------------------
    @abstractmethod
    def image_path(self, name: str) -> Path: ...

    @abstractmethod
    def label_path(self, name: str, class_id: int) -> Path: ...

    @abstractmethod
    def load_image(self, name: str) -> np.ndarray:
        """``H x W x 3`` uint8 RGB. Raises ``DataError``/``MissingFileError`` naming the file."""

    @abstractmethod
    def load_label(self, name: str, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        """``(mask, ignore)`` at original size: uint8 {0,1} mask of ``class_id``, bool ignore."""

    # --- validation --------------------------------------------------------
    @abstractmethod
    def check(self, shots: int = 1) -> list[str]:
        """Every problem found under ``root``, one human-readable line each (empty: valid)."""

    def describe(self) -> str:
        return f"{self.name} at {self.root}"


class IndexedMaskDataset(FSSDataset):
    """Layouts with ``image_dir/NAME.jpg`` images and ``mask_dir/NAME.png`` class-index masks
    (value = 1-based class, ``IGNORE_INDEX`` = boundary), as PASCAL-5i (SBD-augmented) and
    COCO-20i (HSNet's PNG masks) ship them. Subclasses set ``image_dir`` and ``mask_dir``."""

    image_dir: Path
    mask_dir: Path
    _valid_mask_values: np.ndarray | None = None
    """``[256]`` bool: which mask values are allowed (0, the dataset's classes, ``IGNORE_INDEX``)."""

    def image_path(self, name: str) -> Path:
        return self.image_dir / f"{name}.jpg"

    def label_path(self, name: str, class_id: int = 0) -> Path:
        return self.mask_dir / f"{name}.png"

    def load_image(self, name: str) -> np.ndarray:
        return read_rgb(self.image_path(name))

    def load_label(self, name: str, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Binary mask of ``class_id`` and the ignore mask. A mask holding any value that is not
        0, a class of this dataset or ``IGNORE_INDEX`` is a ``DataError``: such pixels would
        silently count as background of every class and bias the scores."""
        path = self.label_path(name, class_id)
        raw = read_index_mask(path)
        self._check_mask_values(raw, path)
        return (raw == class_id).astype(np.uint8), raw == IGNORE_INDEX

    def _check_mask_values(self, raw: np.ndarray, path: Path) -> None:
        valid = self._valid_mask_values
        if valid is None:
            valid = np.zeros(256, dtype=bool)
            valid[[0, IGNORE_INDEX, *(c for c in self.class_names if 0 < c < 256)]] = True
            self._valid_mask_values = valid
        counts = np.bincount(raw.ravel(), minlength=256)
        bad = np.flatnonzero((counts > 0) & ~valid)
        if bad.size:
            shown = ", ".join(str(int(v)) for v in bad[:8]) + (f", ... ({bad.size} values)" if bad.size > 8 else "")
            n = max(c for c in self.class_names)
            raise DataError(
                f"mask {path} has value(s) {shown}, which are not classes of {self.name} (expected 0, 1..{n} "
                f"and {IGNORE_INDEX}); fix the mask (`fssbench data check {self.root} --dataset {self.name}` lists every such file)"
            )


_REGISTRY: dict[str, type[FSSDataset]] = {}
_ALIASES: dict[str, str] = {}


def register_dataset(*names: str) -> Callable[[type[FSSDataset]], type[FSSDataset]]:
    """Class decorator: make a dataset available under ``names`` (first is canonical)."""

    def deco(cls: type[FSSDataset]) -> type[FSSDataset]:
        _REGISTRY[names[0]] = cls
        for alias in names:
            _ALIASES[alias] = names[0]
        return cls

    return deco


def is_dataset_name(name: str) -> bool:
    """Whether ``name`` (any case) is a registered dataset name or alias."""
    return name.lower() in _ALIASES


def dataset_names() -> list[str]:
    return sorted(_REGISTRY)


def get_dataset(name: str, root: str | Path, **options: object) -> FSSDataset:
    """Instantiate a registered dataset; unknown names and missing roots are user errors."""
    key = _ALIASES.get(name.lower())
    if key is None:
        raise UserError(f"unknown dataset '{name}'; choose one of: {', '.join(dataset_names())}")
    root = Path(root)
    if not root.is_dir():
        if root.exists():
            raise UserError(f"dataset root '{root}' is a file, not a folder; pass the folder that holds the {key} data")
        raise UserError(f"dataset root '{root}' does not exist; pass the folder that holds the {key} data")
    return _REGISTRY[key](root, **options)
