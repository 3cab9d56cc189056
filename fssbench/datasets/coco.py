"""COCO-20i in the HSNet layout.

On disk (``root`` is the folder the user passes)::

    root/COCO2014/train2014/<file>.jpg
    root/COCO2014/val2014/<file>.jpg
    root/COCO2014/annotations/train2014/<file>.png   # HSNet's PNG masks: pixel value = 1-based
    root/COCO2014/annotations/val2014/<file>.png     # contiguous class id 1..80, 0 = background
    root/splits/coco/trn/fold{0..3}.pkl              # HSNet lists (see below)
    root/splits/coco/val/fold{0..3}.pkl
    root/classes.txt                                 # optional "<id> <name>" lines

``--split-dir DIR`` / ``split_dir=`` replaces ``root/splits/coco`` (HSNet's ``data/splits`` works).

HSNet's lists are pickles of a dict mapping the *0-based* class index (0..79) to a list of image
names ``"train2014/COCO_train2014_000000013279.jpg"``; every file has all 80 keys, and
``trn/foldK.pkl`` fills the fold's base classes (train2014 images) while ``val/foldK.pkl`` fills its
novel classes (val2014 images). They are read with a restricted unpickler that resolves no global
beyond plain builtin containers, so a list file cannot run code.

Entry names drop the ``.jpg``: ``"val2014/COCO_val2014_000000429717"``.

Folds: ``split_scheme="interleaved"`` (default, HSNet/PFENet ``use_split_coco``): class c is a novel
class of fold (c-1) mod 4. ``split_scheme="consecutive"``: fold K = classes 20K+1..20K+20.

Splits (the lists are pooled by class, so any scheme works with HSNet's files):

* ``entries(K, "trn")``: base classes of K, their train2014 images from the ``trn`` pickles;
* ``entries(K, "val")``: novel classes of K, their val2014 images from the ``val`` pickles;
* ``entries(K, "baseval")``: base classes of K, their val2014 images from the ``val`` pickles (the
  other folds' val lists), without the images that are test queries of K (``entries(K, "val")``;
  a val2014 image often holds a novel and a base class): held-out images for model selection, so
  no model is chosen on the test fold or on one of its query images.

Order: classes ascending, each class's images in list order (``baseval``: then round robin over
classes, ``fssbench.datasets.splits.baseval_entries``; class-uniform sampling ignores the order).
A class's list is taken from fold K's own file when it has one (exactly HSNet's lists), otherwise
from the first other file of that kind.

Sampling is ``class_uniform`` (HSNet draws a class uniformly, then a query of that class).
Labels: ``mask == c``; ``ignore = mask == 255`` (HSNet's COCO masks have none).
"""

from __future__ import annotations

from pathlib import Path

from fssbench.datasets.base import SPLITS, Entry, IndexedMaskDataset, register_dataset
from fssbench.datasets.check import (
    Listed,
    Problems,
    ScanProgress,
    cross_check,
    missing_dir_problem,
    missing_list_problem,
    probe_index_pair,
    scan,
    unique_names,
)
from fssbench.datasets.io import load_plain_pickle, read_classes_file
from fssbench.datasets.splits import SplitBuild, baseval_entries, build_coco_lists, resolve_split_dir
from fssbench.errors import DataError, MissingFileError, UserError

COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
"""The 80 COCO classes in contiguous-id order (id = index + 1), as in HSNet's masks."""

SPLIT_SCHEMES: tuple[str, ...] = ("interleaved", "consecutive")
LIST_KINDS: tuple[str, ...] = ("trn", "val")
SUBSETS = {"trn": "train2014", "val": "val2014"}


def _strip_jpg(name: str) -> str:
    return name[:-4] if name.lower().endswith(".jpg") else name


@register_dataset("coco", "coco20i")
class CocoDataset(IndexedMaskDataset):
    """COCO-20i (COCO2014 images + HSNet's PNG masks) with HSNet's pickle split lists."""

    name = "coco"
    n_folds = 4
    sampling = "class_uniform"

    def __init__(self, root: str | Path, *, split_dir: str | Path | None = None, **options: object) -> None:
        super().__init__(root, split_dir=split_dir, **options)
        scheme = str(options.get("split_scheme") or "interleaved")
        if scheme not in SPLIT_SCHEMES:
            raise UserError(f"unknown COCO split scheme '{scheme}'; choose one of: {', '.join(SPLIT_SCHEMES)}")
        self.split_scheme = scheme
        self.image_dir = self.root / "COCO2014"
        self.mask_dir = self.image_dir / "annotations"
        self.lists_dir = resolve_split_dir(self.root, self.split_dir, "coco")
        self._class_names: dict[int, str] | None = None
        self._raw: dict[Path, tuple[dict[int, list[str]], list[str]]] = {}
        self._entries: dict[tuple[int, str], list[Entry]] = {}

    # --- classes -----------------------------------------------------------
    @property
    def class_names(self) -> dict[int, str]:
        if self._class_names is None:
            path = self.root / "classes.txt"
            if path.is_file():
                names = read_classes_file(path)
                if len(names) % self.n_folds:
                    raise DataError(f"{path} lists {len(names)} classes; COCO-20i needs a multiple of {self.n_folds}")
            else:
                names = {i + 1: n for i, n in enumerate(COCO_CLASSES)}
            self._class_names = names
        return dict(self._class_names)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def fold_of(self, class_id: int) -> int:
        if self.split_scheme == "interleaved":
            return (class_id - 1) % self.n_folds
        return (class_id - 1) // (self.n_classes // self.n_folds)

    def fold_classes(self, fold: int) -> list[int]:
        self.check_fold(fold)
        return [c for c in range(1, self.n_classes + 1) if self.fold_of(c) == fold]

    # --- lists -------------------------------------------------------------
    def list_path(self, kind: str, fold: int) -> Path:
        """``<split dir>/<kind>/fold<fold>.pkl`` (``kind`` is ``trn`` or ``val``)."""
        return self.lists_dir / kind / f"fold{fold}.pkl"

    def _load(self, kind: str, fold: int) -> tuple[dict[int, list[str]], list[str]]:
        """1-based class id -> image names (``.jpg`` dropped) of one pickle, and its problems."""
        path = self.list_path(kind, fold)
        if path not in self._raw:
            obj = load_plain_pickle(path)
            problems: list[str] = []
            out: dict[int, list[str]] = {}
            if not isinstance(obj, dict):
                problems.append(f"{path}: expected a dict of class index -> image list, got {type(obj).__name__}")
            else:
                n = self.n_classes
                for key, value in obj.items():
                    if not isinstance(key, int) or not 0 <= key < n:
                        problems.append(f"{path}: key {key!r} is not a 0-based class index 0..{n - 1}")
                        continue
                    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                        problems.append(f"{path} [class {key + 1}]: expected a list of image names")
                        continue
                    prefix = SUBSETS[kind] + "/"
                    wrong = [v for v in value if not v.startswith(prefix)]
                    if wrong:
                        problems.append(
                            f"{path} [class {key + 1}]: {len(wrong)} name(s) not under {prefix} (e.g. '{wrong[0]}'); "
                            f"{kind} lists hold {SUBSETS[kind]} images"
                        )
                    out[key + 1] = [_strip_jpg(v) for v in value if v.startswith(prefix)]
            self._raw[path] = (out, problems)
        return self._raw[path]

    def _class_lists(self, kind: str, fold: int, classes: list[int]) -> dict[int, list[str]]:
        """Each class's list, from fold ``fold``'s file first, then the other files of ``kind``."""
        order = [fold] + [j for j in range(self.n_folds) if j != fold]
        found: dict[int, list[str]] = {}
        missing: list[Path] = []
        for j in order:
            need = [c for c in classes if c not in found]
            if not need:
                break
            path = self.list_path(kind, j)
            if not path.is_file():
                missing.append(path)
                continue
            lists, problems = self._load(kind, j)
            if problems:
                raise DataError(
                    f"{problems[0]} (run `fssbench data check {self.root} --dataset coco` for all problems)"
                )
            for c in need:
                if lists.get(c):
                    found[c] = lists[c]
        if missing and any(c not in found for c in classes):
            raise MissingFileError(missing_list_problem(missing[0], self.root, "coco"))
        return found

    def entries(self, fold: int, split: str) -> list[Entry]:
        """Classes ascending, each class's images in list order; ``baseval`` without the fold's
        test-query images, round robin over classes (see module doc)."""
        self.check_fold(fold)
        if split not in SPLITS:
            raise UserError(f"unknown split '{split}'; choose one of: {', '.join(SPLITS)}")
        key = (fold, split)
        if key not in self._entries:
            novel = self.fold_classes(fold)
            classes = novel if split == "val" else self.base_classes(fold)
            kind = "trn" if split == "trn" else "val"
            lists = self._class_lists(kind, fold, classes)
            listed = [Entry(name, c) for c in classes for name in lists.get(c, [])]
            if split == "baseval":
                listed = baseval_entries(listed, self.entries(fold, "val"))
            self._entries[key] = listed
        return list(self._entries[key])

    def write_split_lists(
        self, out_dir: Path, *, force: bool = False, progress: ScanProgress | None = None, workers: int | None = None
    ) -> SplitBuild:
        """The lists by this dataset's rule (``fssbench.datasets.splits``)."""
        return build_coco_lists(self, out_dir, force, progress, workers)

    # --- validation --------------------------------------------------------
    def check(self, shots: int = 1, *, progress: ScanProgress | None = None, workers: int | None = None) -> list[str]:
        """Every problem under ``root`` (folders, lists, images, masks, class counts), one line each."""
        problems = Problems()
        try:
            names = self.class_names
        except UserError as exc:
            return [str(exc)]
        image_ok: dict[str, bool] = {}
        mask_ok: dict[str, bool] = {}
        if not self.image_dir.is_dir():
            hint = "ROOT must be the folder that contains COCO2014/"
            if (self.root / "train2014").is_dir():
                hint += f" (it looks like you passed COCO2014 itself; pass {self.root.parent})"
            problems.add(missing_dir_problem(self.image_dir, hint))
        for subset in SUBSETS.values():
            image_ok[subset] = (self.image_dir / subset).is_dir()
            mask_ok[subset] = (self.mask_dir / subset).is_dir()
            if self.image_dir.is_dir() and not image_ok[subset]:
                problems.add(missing_dir_problem(self.image_dir / subset, f"extract COCO {subset}.zip there"))
            if self.image_dir.is_dir() and not mask_ok[subset]:
                problems.add(
                    missing_dir_problem(
                        self.mask_dir / subset,
                        f"COCO-20i needs HSNet's PNG masks ({subset}.zip from the HSNet README) there; "
                        "the official JSON annotations are not read",
                    )
                )

        listed: list[Listed] = []
        expected: dict[str, list[int]] = {}
        seen: set[tuple[str, str, int]] = set()
        for kind in LIST_KINDS:
            group = f"{self.lists_dir / kind}/fold*.pkl"
            complete = True
            for fold in range(self.n_folds):
                path = self.list_path(kind, fold)
                if not path.is_file():
                    problems.add(missing_list_problem(path, self.root, "coco"))
                    complete = False
                    continue
                try:
                    lists, list_problems = self._load(kind, fold)
                except UserError as exc:
                    problems.add(str(exc))
                    complete = False
                    continue
                problems.extend(list_problems)
                complete = complete and not list_problems
                for cid in sorted(lists):
                    for name in lists[cid]:
                        if (kind, name, cid) in seen:  # HSNet repeats a class's trn list in three files
                            continue
                        seen.add((kind, name, cid))
                        listed.append(Listed(Entry(name, cid), f"{path} [class {cid}]", group, kind))
            if complete:
                expected[group] = sorted(names)

        hint = f"expected 0 (background), 1..{len(names)} (class ids) or 255 (ignore)"
        todo = unique_names(listed)

        def probe(name: str):  # type: ignore[no-untyped-def]
            subset = name.split("/", 1)[0]
            return probe_index_pair(
                self.image_path(name) if image_ok.get(subset, False) else None,
                self.label_path(name) if mask_ok.get(subset, False) else None,
                n_classes=len(names),
                value_hint=hint,
            )

        results = scan(todo, probe, progress=progress, description="checking COCO images and masks", workers=workers)
        for result in results:
            problems.extend(result.problems)
        problems.extend(
            cross_check(
                listed,
                dict(zip(todo, results)),
                shots=shots,
                class_names=names,
                label_path=lambda e: self.label_path(e.name, e.class_id),
                expected=expected,
            )
        )
        return problems.lines
