"""FSS-1000 in the HSNet layout.

On disk (``root`` is the folder the user passes)::

    root/FSS-1000/<class>/<N>.jpg     # images (N = 1..10 in the release)
    root/FSS-1000/<class>/<N>.png     # masks: 0 background, 255 object (any mode; luminance >= 128
                                      # is foreground, HSNet's threshold)
    root/splits/fss/trn.txt           # HSNet's class lists, one class folder name per line
    root/splits/fss/val.txt
    root/splits/fss/test.txt

``--split-dir DIR`` / ``split_dir=`` replaces ``root/splits/fss`` (HSNet's ``data/splits`` works).

There is one fold (``n_folds = 1``). Our split names map onto HSNet's lists as follows:

* ``trn``     -> ``trn.txt``  (520 training classes);
* ``val``     -> ``test.txt`` (240 novel classes: the evaluation set every paper reports);
* ``baseval`` -> ``val.txt``  (240 classes HSNet uses for model selection). They are neither
  training nor test classes; selecting checkpoints on them keeps the test classes unseen. (The
  ``trn`` classes have no held-out images: all of them are training images.) Its images are
  disjoint from the test queries (a class folder is in exactly one list file).

``fold_classes(0)`` are the ``test.txt`` classes. Class ids are 1-based positions in the sorted
list of all classes named in the three files; ``class_names`` turns ``hotel_slipper`` into
``hotel slipper``, ``class_folder(id)`` gives the folder name back.

Order (HSNet's): a split's classes sorted by folder name; within a class, the ``.jpg`` files
sorted by file name as strings (``1, 10, 2, ...``). Entry names are ``"<class>/<N>"``. ``baseval``
is then taken round robin over its classes (``fssbench.datasets.splits.baseval_entries``), so a
model-selection budget of n episodes covers n classes, not the first n / 10.

Labels: ``mask = luminance >= 128``; FSS-1000 has no ignore label (255 is foreground), so
``ignore`` is all ``False``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fssbench.datasets.base import SPLITS, Entry, FSSDataset, register_dataset
from fssbench.datasets.check import (
    Listed,
    Problems,
    ScanProgress,
    cross_check,
    missing_dir_problem,
    missing_list_problem,
    probe_binary_pair,
    scan,
    unique_names,
)
from fssbench.datasets.io import read_gray_mask, read_rgb, read_text_lines
from fssbench.datasets.splits import SplitBuild, baseval_entries, build_fss_lists, resolve_split_dir
from fssbench.errors import DataError, MissingFileError, UserError

LIST_FILES: tuple[str, ...] = ("trn", "val", "test")
"""HSNet's FSS-1000 list files (without ``.txt``)."""

SPLIT_TO_LIST: dict[str, str] = {"trn": "trn", "val": "test", "baseval": "val"}
"""Our split name -> HSNet's FSS-1000 list file."""

MASK_THRESHOLD = 128


@register_dataset("fss", "fss1000")
class FSS1000Dataset(FSSDataset):
    """FSS-1000 class folders with HSNet's trn/val/test class lists."""

    name = "fss"
    n_folds = 1
    sampling = "query_cycle"

    def __init__(self, root: str | Path, *, split_dir: str | Path | None = None, **options: object) -> None:
        super().__init__(root, split_dir=split_dir, **options)
        self.data_dir = self.root / "FSS-1000"
        self.lists_dir = resolve_split_dir(self.root, self.split_dir, "fss")
        self._lists: dict[str, list[tuple[int, str]]] | None = None
        self._ids: dict[str, int] | None = None
        self._images: dict[str, list[str]] = {}

    # --- lists and classes -------------------------------------------------
    def list_path(self, list_name: str) -> Path:
        """``<split dir>/<list_name>.txt`` (``trn``, ``val`` or ``test``)."""
        return self.lists_dir / f"{list_name}.txt"

    def _read_lists(self) -> dict[str, list[tuple[int, str]]]:
        if self._lists is None:
            lists = {}
            for lst in LIST_FILES:
                path = self.list_path(lst)
                if not path.is_file():
                    raise MissingFileError(missing_list_problem(path, self.root, "fss"))
                lists[lst] = read_text_lines(path)
            self._lists = lists
        return self._lists

    def _class_ids(self) -> dict[str, int]:
        if self._ids is None:
            folders = sorted({c for items in self._read_lists().values() for _, c in items})
            self._ids = {c: i + 1 for i, c in enumerate(folders)}
        return self._ids

    @property
    def class_names(self) -> dict[int, str]:
        return {i: c.replace("_", " ") for c, i in self._class_ids().items()}

    def class_folder(self, class_id: int) -> str:
        """The folder name of ``class_id`` (``class_names`` has spaces instead of underscores)."""
        for c, i in self._class_ids().items():
            if i == class_id:
                return c
        raise UserError(f"FSS-1000 has no class id {class_id}")

    def list_classes(self, list_name: str) -> list[int]:
        """Class ids named in one HSNet list file, sorted by folder name (HSNet's order)."""
        ids = self._class_ids()
        return [ids[c] for c in sorted({c for _, c in self._read_lists()[list_name]})]

    def fold_classes(self, fold: int) -> list[int]:
        self.check_fold(fold)
        return self.list_classes(SPLIT_TO_LIST["val"])

    # --- entries -----------------------------------------------------------
    def _class_images(self, folder: str) -> list[str]:
        if folder not in self._images:
            d = self.data_dir / folder
            if not d.is_dir():
                raise MissingFileError(
                    f"missing folder {d}: class '{folder}' is listed in the FSS-1000 split lists; restore it from the download"
                )
            self._images[folder] = sorted(p.name[:-4] for p in d.iterdir() if p.name.endswith(".jpg") and p.is_file())
        return self._images[folder]

    def entries(self, fold: int, split: str) -> list[Entry]:
        """The split's classes by folder name, each class's ``.jpg`` files by file name (HSNet order;
        ``baseval`` round robin over its classes)."""
        self.check_fold(fold)
        if split not in SPLITS:
            raise UserError(f"unknown split '{split}'; choose one of: {', '.join(SPLITS)}")
        ids = self._class_ids()
        problems = self._list_problems()
        if problems:
            raise DataError(f"{problems[0]} (run `fssbench data check {self.root} --dataset fss` for all problems)")
        out = []
        for folder in sorted({c for _, c in self._read_lists()[SPLIT_TO_LIST[split]]}):
            out.extend(Entry(f"{folder}/{stem}", ids[folder]) for stem in self._class_images(folder))
        if split == "baseval":
            out = baseval_entries(out, self.entries(fold, "val"))
        return out

    def _list_problems(self) -> list[str]:
        """Malformed names and classes listed twice (within or across the three files)."""
        problems = []
        first: dict[str, str] = {}
        for lst in LIST_FILES:
            for lineno, folder in self._read_lists()[lst]:
                where = f"{self.list_path(lst)}:{lineno}"
                if "/" in folder or "\\" in folder or folder in (".", ".."):
                    problems.append(f"{where}: '{folder}' is not a class folder name")
                elif folder in first:
                    problems.append(
                        f"{where}: class '{folder}' is already listed at {first[folder]}; a class must be in exactly "
                        f"one of trn/val/test"
                    )
                else:
                    first[folder] = where
        return problems

    # --- files -------------------------------------------------------------
    def _split_name(self, name: str) -> tuple[str, str]:
        folder, _, stem = name.rpartition("/")
        if not folder:
            raise UserError(f"FSS-1000 image names look like '<class>/<N>', not '{name}'")
        return folder, stem

    def image_path(self, name: str) -> Path:
        folder, stem = self._split_name(name)
        return self.data_dir / folder / f"{stem}.jpg"

    def label_path(self, name: str, class_id: int = 0) -> Path:
        folder, stem = self._split_name(name)
        return self.data_dir / folder / f"{stem}.png"

    def load_image(self, name: str) -> np.ndarray:
        return read_rgb(self.image_path(name))

    def load_label(self, name: str, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        folder, _ = self._split_name(name)
        gray = read_gray_mask(self.label_path(name, class_id))
        if self._class_ids().get(folder) != class_id:
            mask = np.zeros(gray.shape, dtype=np.uint8)  # an FSS-1000 image shows only its own class
        else:
            mask = (gray >= MASK_THRESHOLD).astype(np.uint8)
        return mask, np.zeros(gray.shape, dtype=bool)

    def write_split_lists(
        self, out_dir: Path, *, force: bool = False, progress: ScanProgress | None = None, workers: int | None = None
    ) -> SplitBuild:
        """The lists by this dataset's rule (``fssbench.datasets.splits``)."""
        return build_fss_lists(self, out_dir, force)

    # --- validation --------------------------------------------------------
    def check(self, shots: int = 1, *, progress: ScanProgress | None = None, workers: int | None = None) -> list[str]:
        """Every problem under ``root`` (folders, lists, images, masks, class counts), one line each."""
        problems = Problems()
        data_ok = self.data_dir.is_dir()
        if not data_ok:
            hint = "ROOT must be the folder that contains FSS-1000/ (one sub-folder per class)"
            problems.add(missing_dir_problem(self.data_dir, hint))
        missing = [lst for lst in LIST_FILES if not self.list_path(lst).is_file()]
        for lst in missing:
            problems.add(missing_list_problem(self.list_path(lst), self.root, "fss"))
        if missing:
            return problems.lines
        try:
            ids = self._class_ids()
            problems.extend(self._list_problems())
        except UserError as exc:
            problems.add(str(exc))
            return problems.lines
        listed: list[Listed] = []
        done: set[str] = set()
        for lst in LIST_FILES:
            path = self.list_path(lst)
            for lineno, folder in self._read_lists()[lst]:
                if folder in done or "/" in folder or "\\" in folder or folder in (".", ".."):
                    continue
                done.add(folder)
                if not data_ok:
                    continue
                try:
                    stems = self._class_images(folder)
                except UserError as exc:
                    problems.add(f"{exc} ({path}:{lineno})")
                    continue
                for stem in stems:
                    listed.append(Listed(Entry(f"{folder}/{stem}", ids[folder]), f"{path}:{lineno}", str(path), lst))

        todo = unique_names(listed)
        cid_of = {item.entry.name: item.entry.class_id for item in listed}

        def probe(name: str):  # type: ignore[no-untyped-def]
            return probe_binary_pair(self.image_path(name), self.label_path(name), cid_of[name], MASK_THRESHOLD)

        results = scan(
            todo, probe, progress=progress, description="checking FSS-1000 images and masks", workers=workers
        )
        for result in results:
            problems.extend(result.problems)
        names = self.class_names
        present = [folder for folder in sorted(done) if data_ok and (self.data_dir / folder).is_dir()]
        for folder in (f for f in present if not self._class_images(f)):
            problems.add(f"class folder {self.data_dir / folder} has no .jpg images; restore them from the download")
        problems.extend(
            cross_check(
                listed,
                dict(zip(todo, results)),
                shots=shots,
                class_names=names,
                label_path=lambda e: self.label_path(e.name, e.class_id),
                check_overlap=False,
            )
        )
        return problems.lines
