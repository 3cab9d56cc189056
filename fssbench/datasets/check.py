"""Helpers shared by the datasets' ``check()`` methods (``fssbench data check``).

A check never stops at the first problem: it collects one human-readable line per problem
(missing or corrupt files, unexpected mask values, list entries whose class is absent from the
mask, image/mask size mismatches, classes with too few images for the requested shots, missing or
malformed split lists) so that a user can fix everything in one pass.

The pieces:

* ``Listed``: an entry of a split list together with where it was listed (``file:line``), the
  list group it counts towards (one per list file) and the kind of list (``trn``/``val``...).
* ``Probe``: what reading one image and its mask found (problems, classes present in the mask).
* ``probe_index_pair`` / ``probe_binary_pair``: probes for class-index masks (PASCAL, COCO) and
  binary masks (FSS-1000).
* ``scan``: runs a probe over many names on a few threads and drives a progress display.
* ``cross_check``: the checks that need lists and probes together.
* ``split_summary``: the one-line summary printed for a valid root.
"""

from __future__ import annotations

import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence, TypeVar

from fssbench.datasets.base import SPLITS, Entry, FSSDataset
from fssbench.datasets.io import image_size, present_values, read_gray_mask, read_index_mask
from fssbench.errors import UserError
from fssbench.paths import file_in_the_way

T = TypeVar("T")
R = TypeVar("R")


class ScanProgress(Protocol):
    """What a check reports while it scans (the CLI backs this with a rich progress bar)."""

    def start(self, description: str, total: int) -> None: ...

    def advance(self, n: int = 1) -> None: ...


class NullProgress:
    """A progress sink that shows nothing (library use, tests)."""

    def start(self, description: str, total: int) -> None:  # noqa: D102
        pass

    def advance(self, n: int = 1) -> None:  # noqa: D102
        pass


def default_workers() -> int:
    """Threads used to decode files during a check (decoding releases the GIL)."""
    return max(1, min(8, os.cpu_count() or 1))


@dataclass(frozen=True)
class Listed:
    """An entry as found in a split list."""

    entry: Entry
    where: str
    """``<list file>:<line>`` (or ``<pickle> [class N]``), for messages."""
    group: str
    """The list it counts towards for the ``shots + 1`` rule (e.g. ``.../val/fold0.txt``)."""
    kind: str
    """``trn`` for training lists, anything else for held-out lists (overlap check)."""


@dataclass
class Probe:
    """Result of reading one image and its mask."""

    problems: list[str] = field(default_factory=list)
    classes: set[int] | None = None
    """Classes present in the mask; ``None`` when the mask could not be read (or was not checked)."""


class Problems:
    """An ordered, de-duplicated list of problem lines."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._seen: set[str] = set()

    def add(self, line: str) -> None:
        line = " ".join(line.split())
        if line not in self._seen:
            self._seen.add(line)
            self._lines.append(line)

    def extend(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.add(line)

    @property
    def lines(self) -> list[str]:
        return list(self._lines)

    def __len__(self) -> int:
        return len(self._lines)


def missing_list_problem(path: Path, root: Path, dataset: str) -> str:
    """The line for a split list that is absent: the exact path and both fixes (or, when a folder
    on its path is a file, e.g. ``--split-dir`` given a file, that)."""
    if path.is_dir():
        return f"split list {path} is a folder, not a file; remove it or pass --split-dir DIR with the official HSNet lists"
    blocker = file_in_the_way(path)
    if blocker is not None:
        return (
            f"split list {path} cannot exist: {blocker} is a file, not a folder; pass --split-dir the folder that "
            f"holds the lists, or build them with `fssbench data splits {root} --dataset {dataset}`"
        )
    return (
        f"missing split list {path}: build lists from the data with `fssbench data splits {root} --dataset {dataset}` "
        f"or pass --split-dir DIR with the official HSNet lists"
    )


def missing_dir_problem(path: Path, hint: str = "") -> str:
    """The line for a folder the layout needs; a file at that path is named as such."""
    if path.exists() and not path.is_dir():
        return f"{path} is a file, not a folder{': ' + hint if hint else ''}"
    blocker = file_in_the_way(path)
    if blocker is not None:
        return f"missing folder {path} ({blocker} is a file, not a folder){': ' + hint if hint else ''}"
    return f"missing folder {path}{': ' + hint if hint else ''}"


def _values_text(values: Sequence[int], limit: int = 8) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} values)" if len(values) > limit else "")


def probe_index_pair(
    image_path: Path | None,
    mask_path: Path | None,
    *,
    n_classes: int,
    value_hint: str,
) -> Probe:
    """Read an image and its class-index mask; report corruption, bad values, size mismatch.

    ``None`` for a path skips that file (its whole folder is missing and was reported once).
    Allowed mask values are 0 (background), 1..``n_classes`` and 255 (ignore).
    """
    probe = Probe()
    size = None
    if image_path is not None:
        try:
            size = image_size(image_path)
        except UserError as exc:
            probe.problems.append(str(exc))
    if mask_path is None:
        return probe
    try:
        mask = read_index_mask(mask_path)
    except UserError as exc:
        probe.problems.append(str(exc))
        return probe
    values = present_values(mask)
    bad = sorted(v for v in values if v != 255 and not 0 <= v <= n_classes)
    if bad:
        probe.problems.append(f"mask {mask_path} has unexpected values {_values_text(bad)}; {value_hint}")
    probe.classes = {v for v in values if 1 <= v <= n_classes}
    if size is not None and size != mask.shape:
        probe.problems.append(
            f"size mismatch: image {image_path} is {size[1]}x{size[0]} but its mask {mask_path} is "
            f"{mask.shape[1]}x{mask.shape[0]} (width x height); replace the mismatched file"
        )
    return probe


def probe_binary_pair(image_path: Path | None, mask_path: Path | None, class_id: int, threshold: int = 128) -> Probe:
    """Read an image and its binary mask (foreground = luminance >= ``threshold``)."""
    probe = Probe()
    size = None
    if image_path is not None:
        try:
            size = image_size(image_path)
        except UserError as exc:
            probe.problems.append(str(exc))
    if mask_path is None:
        return probe
    try:
        mask = read_gray_mask(mask_path)
    except UserError as exc:
        probe.problems.append(str(exc))
        return probe
    probe.classes = {class_id}
    if not bool((mask >= threshold).any()):
        probe.problems.append(
            f"mask {mask_path} has no foreground (no pixel >= {threshold}); fix the mask or remove {image_path or 'its image'}"
        )
    if size is not None and size != mask.shape:
        probe.problems.append(
            f"size mismatch: image {image_path} is {size[1]}x{size[0]} but its mask {mask_path} is "
            f"{mask.shape[1]}x{mask.shape[0]} (width x height); replace the mismatched file"
        )
    return probe


def scan(
    items: Sequence[T],
    fn: Callable[[T], R],
    *,
    progress: ScanProgress | None = None,
    description: str = "scanning",
    workers: int | None = None,
) -> list[R]:
    """``[fn(x) for x in items]`` on ``workers`` threads, in order, advancing ``progress``."""
    progress = progress or NullProgress()
    progress.start(description, len(items))
    workers = workers or default_workers()
    if workers <= 1 or len(items) < 16:
        out = []
        for item in items:
            out.append(fn(item))
            progress.advance()
        return out
    out = []
    chunk = 64 * workers
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(items), chunk):
            for result in pool.map(fn, items[start : start + chunk]):
                out.append(result)
                progress.advance()
    return out


def unique_names(listed: Iterable[Listed]) -> list[str]:
    """Image names in first-listed order, each once."""
    seen: dict[str, None] = {}
    for item in listed:
        seen.setdefault(item.entry.name, None)
    return list(seen)


def cross_check(
    listed: Sequence[Listed],
    probes: dict[str, Probe],
    *,
    shots: int,
    class_names: dict[int, str],
    label_path: Callable[[Entry], Path],
    check_overlap: bool = True,
    expected: dict[str, Iterable[int]] | None = None,
) -> list[str]:
    """Checks that need both lists and files.

    * a listed class that is absent from the entry's mask;
    * a class with fewer than ``shots + 1`` distinct images in one list (one query plus ``shots``
      supports cannot be drawn); ``expected`` names, per list group, the classes that must appear
      in it, so classes with no image at all are reported too;
    * an image listed both in a training list and in a held-out list (leaks test images).
    """
    problems: list[str] = []
    for item in listed:
        probe = probes.get(item.entry.name)
        if probe is None or probe.classes is None:
            continue
        cid = item.entry.class_id
        if cid not in probe.classes:
            problems.append(
                f"{item.where}: class {cid} ({class_names.get(cid, '?')}) is not in mask "
                f"{label_path(item.entry)}; remove the line or fix the mask"
            )
    need = shots + 1
    per_group: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for group, classes in (expected or {}).items():
        for cid in classes:
            per_group[group][cid]  # noqa: B018 - creates the (empty) entry
    for item in listed:
        per_group[item.group][item.entry.class_id].add(item.entry.name)
    for group, classes in per_group.items():
        for cid in sorted(classes):
            n = len(classes[cid])
            if n < need:
                problems.append(
                    f"{group}: class {cid} ({class_names.get(cid, '?')}) has {n} image{'s' if n != 1 else ''}, "
                    f"fewer than shots + 1 = {need} needed for {shots}-shot episodes; add images or use fewer shots"
                )
    if check_overlap:
        kinds: dict[str, set[str]] = defaultdict(set)
        first_where: dict[tuple[str, str], str] = {}
        for item in listed:
            kinds[item.entry.name].add("trn" if item.kind == "trn" else "held-out")
            first_where.setdefault((item.entry.name, "trn" if item.kind == "trn" else "held-out"), item.where)
        for name, ks in kinds.items():
            if len(ks) > 1:
                problems.append(
                    f"image '{name}' is listed for training ({first_where[(name, 'trn')]}) and for evaluation "
                    f"({first_where[(name, 'held-out')]}); a test image must not be a training image"
                )
    return problems


def split_summary(ds: FSSDataset) -> str:
    """``trn N images / C classes, val ..., baseval ...`` over all folds (distinct images and classes)."""
    parts = []
    for split in SPLITS:
        names: set[str] = set()
        classes: set[int] = set()
        for fold in range(ds.n_folds):
            for e in ds.entries(fold, split):
                names.add(e.name)
                classes.add(e.class_id)
        parts.append(f"{split} {len(names)} images / {len(classes)} classes")
    folds = f"{ds.n_folds} fold{'s' if ds.n_folds != 1 else ''}"
    return f"{', '.join(parts)} ({folds})"
