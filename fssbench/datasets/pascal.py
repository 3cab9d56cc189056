"""PASCAL-5i in the HSNet layout.

On disk (``root`` is the folder the user passes)::

    root/VOC2012/JPEGImages/<name>.jpg
    root/VOC2012/SegmentationClassAug/<name>.png   # palette/grayscale PNG: 0 background,
                                                   # 1..20 classes, 255 object boundary (ignore)
    root/splits/pascal/trn/fold{0..3}.txt          # HSNet lists, one "<name>__<CC>" per line,
    root/splits/pascal/val/fold{0..3}.txt          # CC = 1-based class id (two digits)
    root/classes.txt                               # optional "<id> <name>" lines (synthetic world)

``--split-dir DIR`` / ``split_dir=`` replaces ``root/splits/pascal``; ``DIR`` may be HSNet's
``data/splits`` folder (then ``DIR/pascal`` is used) or the ``pascal`` folder itself.

Folds: with N classes (20 for VOC), fold K's novel classes are ``N/4*K+1 .. N/4*K+N/4``, i.e.
5K+1..5K+5 for VOC.

Lists: ``trn/foldK.txt`` holds *training-image* pairs whose class belongs to fold K and
``val/foldK.txt`` holds *VOC-val-image* pairs whose class belongs to fold K. So, as in HSNet:

* ``entries(K, "trn")``: ``trn/foldJ.txt`` for every J != K, in fold order, each in file order
  (base-class training pairs);
* ``entries(K, "val")``: ``val/foldK.txt`` in file order (novel-class test pairs);
* ``entries(K, "baseval")``: ``val/foldJ.txt`` for every J != K (held-out val images paired with
  the fold's *base* classes), without the images that are also listed in ``val/foldK.txt`` (a
  val image holding a novel and a base class is a test query), round robin over the base classes
  (``fssbench.datasets.splits.baseval_entries``). This is the model-selection split: choose
  checkpoints on it, never on ``val``, so that no model is picked on the test fold or on one of
  its query images.

Labels: ``load_label(name, c)`` returns ``mask == c`` and ``ignore = mask == 255`` at original size.
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
from fssbench.datasets.io import read_classes_file, read_text_lines
from fssbench.datasets.splits import SplitBuild, baseval_entries, build_pascal_lists, resolve_split_dir
from fssbench.errors import DataError, MissingFileError, UserError

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "dining table",
    "dog",
    "horse",
    "motorbike",
    "person",
    "potted plant",
    "sheep",
    "sofa",
    "train",
    "tv monitor",
)
"""The 20 VOC classes (ids 1..20), spelled as words so ``a photo of a {name}`` reads well."""

LIST_KINDS: tuple[str, ...] = ("trn", "val")


def parse_pascal_line(line: str) -> tuple[str, int] | None:
    """``"2007_000033__01"`` -> ``("2007_000033", 1)``; ``None`` when malformed."""
    if "__" not in line:
        return None
    name, _, cc = line.rpartition("__")
    if not name or not cc.isdigit():
        return None
    return name, int(cc)


@register_dataset("pascal", "pascal5i")
class PascalDataset(IndexedMaskDataset):
    """PASCAL-5i (VOC2012 + SBD ``SegmentationClassAug``) with HSNet's split lists."""

    name = "pascal"
    n_folds = 4
    sampling = "query_cycle"

    def __init__(self, root: str | Path, *, split_dir: str | Path | None = None, **options: object) -> None:
        super().__init__(root, split_dir=split_dir, **options)
        self.voc_dir = self.root / "VOC2012"
        self.image_dir = self.voc_dir / "JPEGImages"
        self.mask_dir = self.voc_dir / "SegmentationClassAug"
        self.lists_dir = resolve_split_dir(self.root, self.split_dir, "pascal")
        self._class_names: dict[int, str] | None = None
        self._parsed: dict[Path, tuple[list[Listed], list[str]]] = {}
        self._entries: dict[tuple[int, str], list[Entry]] = {}

    # --- classes -----------------------------------------------------------
    @property
    def classes_file(self) -> Path:
        return self.root / "classes.txt"

    @property
    def class_names(self) -> dict[int, str]:
        if self._class_names is None:
            if self.classes_file.is_file():
                names = read_classes_file(self.classes_file)
                if len(names) % self.n_folds:
                    raise DataError(
                        f"{self.classes_file} lists {len(names)} classes; PASCAL-5i needs a multiple of "
                        f"{self.n_folds} (one equal block per fold)"
                    )
            else:
                names = {i + 1: n for i, n in enumerate(VOC_CLASSES)}
            self._class_names = names
        return dict(self._class_names)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def fold_classes(self, fold: int) -> list[int]:
        self.check_fold(fold)
        per = self.n_classes // self.n_folds
        return list(range(per * fold + 1, per * fold + per + 1))

    def fold_of(self, class_id: int) -> int:
        """The fold whose novel classes include ``class_id``."""
        return (class_id - 1) // (self.n_classes // self.n_folds)

    # --- lists -------------------------------------------------------------
    def list_path(self, kind: str, fold: int) -> Path:
        """``<split dir>/<kind>/fold<fold>.txt`` (``kind`` is ``trn`` or ``val``)."""
        return self.lists_dir / kind / f"fold{fold}.txt"

    def _parse(self, kind: str, fold: int) -> tuple[list[Listed], list[str]]:
        """Entries of one list file and the problems found in it (missing file raises)."""
        path = self.list_path(kind, fold)
        if path not in self._parsed:
            names = self.class_names
            listed: list[Listed] = []
            problems: list[str] = []
            novel = set(self.fold_classes(fold))
            for lineno, line in read_text_lines(path):
                where = f"{path}:{lineno}"
                parsed = parse_pascal_line(line)
                if parsed is None:
                    problems.append(
                        f"{where}: malformed line '{line}'; expected '<image name>__<class id>' (HSNet format)"
                    )
                    continue
                name, cid = parsed
                if cid not in names:
                    problems.append(f"{where}: class id {cid} is not one of 1..{len(names)}")
                    continue
                if cid not in novel:
                    problems.append(
                        f"{where}: class {cid} ({names[cid]}) belongs to fold {self.fold_of(cid)}, not fold {fold}; "
                        f"fold{fold}.txt may only list classes {min(novel)}..{max(novel)}"
                    )
                    continue
                listed.append(Listed(Entry(name, cid), where, str(path), kind))
            self._parsed[path] = (listed, problems)
        return self._parsed[path]

    def _list_files(self, fold: int, split: str) -> list[tuple[str, int]]:
        others = [j for j in range(self.n_folds) if j != fold]
        if split == "trn":
            return [("trn", j) for j in others]
        if split == "val":
            return [("val", fold)]
        return [("val", j) for j in others]

    def entries(self, fold: int, split: str) -> list[Entry]:
        """HSNet order: the split's list files in fold order, each in file order; ``baseval``
        without the fold's test-query images, round robin over classes (see module doc)."""
        self.check_fold(fold)
        if split not in SPLITS:
            raise UserError(f"unknown split '{split}'; choose one of: {', '.join(SPLITS)}")
        key = (fold, split)
        if key not in self._entries:
            listed = self._listed_entries(fold, split)
            if split == "baseval":
                listed = baseval_entries(listed, self.entries(fold, "val"))
            self._entries[key] = listed
        return list(self._entries[key])

    def _listed_entries(self, fold: int, split: str) -> list[Entry]:
        """The entries of the split's list files, in fold order and file order."""
        out: list[Entry] = []
        for kind, j in self._list_files(fold, split):
            path = self.list_path(kind, j)
            if not path.is_file():
                raise MissingFileError(missing_list_problem(path, self.root, "pascal"))
            listed, problems = self._parse(kind, j)
            if problems:
                raise DataError(
                    f"{problems[0]} (run `fssbench data check {self.root} --dataset pascal` for all problems)"
                )
            out.extend(item.entry for item in listed)
        return out

    def write_split_lists(
        self, out_dir: Path, *, force: bool = False, progress: ScanProgress | None = None, workers: int | None = None
    ) -> SplitBuild:
        """The lists by this dataset's rule (``fssbench.datasets.splits``)."""
        return build_pascal_lists(self, out_dir, force, progress, workers)

    # --- validation --------------------------------------------------------
    def check(self, shots: int = 1, *, progress: ScanProgress | None = None, workers: int | None = None) -> list[str]:
        """Every problem under ``root`` (folders, lists, images, masks, class counts), one line each."""
        problems = Problems()
        try:
            names = self.class_names
        except UserError as exc:
            return [str(exc)]
        image_ok = self.image_dir.is_dir()
        mask_ok = self.mask_dir.is_dir()
        if not self.voc_dir.is_dir():
            hint = "ROOT must be the folder that contains VOC2012/"
            if (self.root / "JPEGImages").is_dir():
                hint += f" (it looks like you passed VOC2012 itself; pass {self.root.parent})"
            problems.add(missing_dir_problem(self.voc_dir, hint))
        else:
            if not image_ok:
                problems.add(missing_dir_problem(self.image_dir, "extract the VOC2012 trainval images there"))
            if not mask_ok:
                hint = "PASCAL-5i needs the SBD-augmented masks (SegmentationClassAug; see the HSNet README for the download)"
                if (self.voc_dir / "SegmentationClass").is_dir():
                    hint += "; VOC2012/SegmentationClass alone is not enough"
                problems.add(missing_dir_problem(self.mask_dir, hint))

        listed: list[Listed] = []
        expected: dict[str, list[int]] = {}
        for kind in LIST_KINDS:
            for fold in range(self.n_folds):
                path = self.list_path(kind, fold)
                if not path.is_file():
                    problems.add(missing_list_problem(path, self.root, "pascal"))
                    continue
                try:
                    items, list_problems = self._parse(kind, fold)
                except UserError as exc:
                    problems.add(str(exc))
                    continue
                problems.extend(list_problems)
                listed.extend(items)
                expected[str(path)] = self.fold_classes(fold)

        hint = f"expected 0 (background), 1..{len(names)} (classes) and 255 (boundary)"
        todo = unique_names(listed)

        def probe(name: str):  # type: ignore[no-untyped-def]
            return probe_index_pair(
                self.image_path(name) if image_ok else None,
                self.label_path(name) if mask_ok else None,
                n_classes=len(names),
                value_hint=hint,
            )

        results = scan(todo, probe, progress=progress, description="checking PASCAL images and masks", workers=workers)
        probes = dict(zip(todo, results))
        for result in results:
            problems.extend(result.problems)
        problems.extend(
            cross_check(
                listed,
                probes,
                shots=shots,
                class_names=names,
                label_path=lambda e: self.label_path(e.name, e.class_id),
                expected=expected,
            )
        )
        return problems.lines
