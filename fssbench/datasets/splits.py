"""Where split lists live, and how ``fssbench data splits`` builds them when they are absent.

Official lists (HSNet's ``data/splits``) are always used as they are: put them under
``ROOT/splits/<dataset>/`` or pass ``--split-dir``. Building is only for roots that have none
(a private copy of the data, the synthetic world, a subset). The builder refuses to overwrite
existing list files unless ``force=True`` (``--force``). It writes HSNet's formats, so the files
work with HSNet's own code too.

Split-building rule (deterministic: the same data always gives byte-identical lists)
----------------------------------------------------------------------------------
PASCAL-5i (writes ``trn/fold{0..3}.txt`` and ``val/fold{0..3}.txt``):
  * images = every ``VOC2012/SegmentationClassAug/<name>.png`` whose ``JPEGImages/<name>.jpg``
    exists;
  * evaluation ("val") images = the names in ``VOC2012/ImageSets/Segmentation/val.txt`` when that
    file exists; otherwise the names whose ``int(sha1(name).hexdigest(), 16) % 5 == 0`` (a fixed
    ~20% hold-out). All other images are training ("trn") images;
  * every class present in an image's mask (values 1..N; 0 and 255 excluded) gives one line
    ``<name>__<CC>`` (CC = 1-based class id, two digits) in ``<trn|val>/fold<F>.txt``, where F is
    the fold whose novel classes include that class (class c -> fold (c-1) // (N/4));
  * lines are sorted by (name, class id); no object-size filter (HSNet lists have none).

COCO-20i (writes ``trn/fold{0..3}.pkl`` and ``val/fold{0..3}.pkl``, HSNet's pickle format: a dict
mapping every 0-based class index 0..79 to a list of ``"<subset>/<file>.jpg"`` names):
  * ``annotations/train2014/*.png`` -> training lists, ``annotations/val2014/*.png`` -> evaluation
    lists (only masks whose image exists);
  * an image is listed under every class whose 1-based id (1..80) occurs in its mask;
  * ``trn/foldK.pkl`` fills the *base* classes of fold K, ``val/foldK.pkl`` the *novel* classes of
    fold K (other keys hold empty lists, as in HSNet's files), folds following the dataset's split
    scheme (interleaved by default: class c is in fold (c-1) mod 4); names sorted.

Model-selection split (``baseval``; no list file of its own, built from the lists above)
----------------------------------------------------------------------------------------
``entries(K, "baseval")`` of every loader goes through ``baseval_entries``: from the held-out
(image, base class) candidates of fold K it drops every image that is also a test query of fold K
(an entry of ``entries(K, "val")``: a PASCAL/COCO evaluation image holding a novel *and* a base
class is a test query, so selecting a model on it would look at the test fold), then orders the
rest round robin over classes (ascending class id; each class's images keep their list order).
Episodes walk a split list from its start (``query_cycle``), so any model-selection budget of at
least one episode per base class then covers every base class, instead of the first fold's few.

FSS-1000 (writes ``trn.txt``, ``val.txt``, ``test.txt``, one class folder name per line):
  * classes = the sub-folders of ``FSS-1000/`` that hold at least one ``.jpg``;
  * ordered by ``sha1(name).hexdigest()``; the first ``round(N*520/1000)`` go to ``trn``, the next
    ``round(N*240/1000)`` to ``val``, the rest to ``test`` (exactly 520/240/240 for the 1000 FSS
    classes; with fewer classes ``val`` and ``test`` get at least one each);
  * each file lists its classes in alphabetical order.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from fssbench.errors import DataError, MissingFileError, UserError

if TYPE_CHECKING:  # pragma: no cover
    from fssbench.datasets.base import Entry, FSSDataset
    from fssbench.datasets.check import ScanProgress

SPLIT_RULE = (
    "Rule: PASCAL: val images = VOC2012/ImageSets/Segmentation/val.txt if present, else names with "
    "sha1(name) % 5 == 0; each class in an image's mask (not 0/255) gives a '<name>__<CC>' line in "
    "<trn|val>/fold<F>.txt of that class's fold. COCO: train2014 masks -> trn, val2014 masks -> val, "
    "classes = mask values 1..80, HSNet pickle dicts (trn/foldK: base classes, val/foldK: novel classes). "
    "FSS-1000: class folders sorted by sha1(name), split 520/240/240-proportionally into trn/val/test."
)
"""One-paragraph version of the module docstring's rule (shown in ``fssbench data splits --help``)."""

FSS_PROPORTIONS: tuple[int, int, int] = (520, 240, 240)


def default_split_dir(root: str | Path, dataset: str) -> Path:
    """``ROOT/splits/<dataset>`` (HSNet's ``data/splits/<dataset>`` moved under the data root)."""
    return Path(root) / "splits" / dataset


def resolve_split_dir(root: str | Path, split_dir: str | Path | None, dataset: str) -> Path:
    """The folder holding ``dataset``'s lists.

    ``split_dir`` may be HSNet's ``data/splits`` (then ``split_dir/<dataset>`` is used when it
    exists) or the dataset's own folder (``.../splits/pascal``).
    """
    if split_dir is None:
        return default_split_dir(root, dataset)
    sd = Path(split_dir)
    return sd / dataset if (sd / dataset).is_dir() else sd


def sha1_int(name: str) -> int:
    return int(hashlib.sha1(name.encode("utf-8")).hexdigest(), 16)


def pascal_is_holdout(name: str) -> bool:
    """The fallback PASCAL evaluation-image rule: ``sha1(name) % 5 == 0`` (about 20%)."""
    return sha1_int(name) % 5 == 0


def baseval_entries(candidates: Iterable["Entry"], test_queries: Iterable["Entry"]) -> list["Entry"]:
    """The model-selection split of a fold (rule in the module doc).

    ``candidates`` are held-out (image, base class) entries in list order, ``test_queries`` the
    fold's ``val`` entries. Images among the test queries are dropped, so no model is ever chosen
    on an image it is tested on; the rest is interleaved by class so that a prefix of ``n`` entries
    covers ``min(n, number of classes)`` classes.
    """
    banned = {e.name for e in test_queries}
    by_class: dict[int, list["Entry"]] = {}
    for e in candidates:
        if e.name not in banned:
            by_class.setdefault(e.class_id, []).append(e)
    queues = [by_class[c] for c in sorted(by_class)]
    out: list["Entry"] = []
    for r in range(max((len(q) for q in queues), default=0)):
        out.extend(q[r] for q in queues if r < len(q))
    return out


def fss_partition(classes: Iterable[str]) -> tuple[list[str], list[str], list[str]]:
    """FSS-1000 rule: sha1-ordered classes cut 520/240/240-proportionally; each part sorted by name."""
    ordered = sorted(set(classes), key=lambda c: (hashlib.sha1(c.encode("utf-8")).hexdigest(), c))
    n = len(ordered)
    total = sum(FSS_PROPORTIONS)
    n_trn = round(n * FSS_PROPORTIONS[0] / total)
    n_val = round(n * FSS_PROPORTIONS[1] / total)
    if n >= 3:
        n_val = max(1, n_val)
        n_trn = min(n_trn, n - n_val - 1)
    trn = ordered[:n_trn]
    val = ordered[n_trn : n_trn + n_val]
    test = ordered[n_trn + n_val :]
    return sorted(trn), sorted(val), sorted(test)


@dataclass
class SplitBuild:
    """What ``build_splits`` did."""

    dataset: str
    out_dir: Path
    written: list[Path] = field(default_factory=list)
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    """list kind (``trn``/``val``/``test``) -> (distinct images, distinct classes)."""
    notes: list[str] = field(default_factory=list)
    """Files that were skipped or values that were ignored, one line each."""
    rule: str = ""
    """Which variant of the rule was applied (e.g. which PASCAL hold-out)."""


def _refuse_overwrite(targets: list[Path], force: bool, dataset: str) -> None:
    existing = [t for t in targets if t.exists()]
    if existing and not force:
        raise UserError(
            f"split lists already exist ({existing[0]}{f' and {len(existing) - 1} more' if len(existing) > 1 else ''}); "
            f"existing lists are used as they are - pass --force to overwrite them with lists built from the data"
        )


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_lines(path: Path, lines: list[str]) -> None:
    # HSNet reads ``f.read().split('\n')[:-1]``: every line, the last included, ends with '\n'.
    _write_bytes(path, "".join(f"{line}\n" for line in lines).encode("utf-8"))


def build_splits(
    ds: "FSSDataset",
    out: str | Path | None = None,
    *,
    force: bool = False,
    progress: "ScanProgress | None" = None,
    workers: int | None = None,
) -> SplitBuild:
    """Build ``ds``'s split lists under ``out`` (default ``ROOT/splits/<dataset>``) by its rule: the
    dataset says which (``FSSDataset.write_split_lists``; the rules are in the module doc)."""
    out_dir = Path(out) if out is not None else default_split_dir(ds.root, ds.name)
    return ds.write_split_lists(out_dir, force=force, progress=progress, workers=workers)


def _mask_classes(path: Path, n_classes: int) -> tuple[set[int] | None, str | None]:
    """Classes 1..n in an index mask, plus a note on skipped files or ignored values."""
    from fssbench.datasets.io import present_values, read_index_mask

    try:
        values = present_values(read_index_mask(path))
    except UserError as exc:
        return None, f"skipped: {exc}"
    bad = sorted(v for v in values if v != 255 and not 0 <= v <= n_classes)
    note = f"ignored unexpected values {bad[:8]} in mask {path}" if bad else None
    return {v for v in values if 1 <= v <= n_classes}, note


def build_pascal_lists(ds, out_dir: Path, force: bool, progress, workers) -> SplitBuild:  # type: ignore[no-untyped-def]
    """PASCAL-5i's rule (module doc): ``trn/fold<F>.txt`` and ``val/fold<F>.txt``."""
    from fssbench.datasets.check import scan
    from fssbench.datasets.io import read_text_lines

    targets = [out_dir / kind / f"fold{f}.txt" for kind in ("trn", "val") for f in range(ds.n_folds)]
    _refuse_overwrite(targets, force, "pascal")
    if not ds.mask_dir.is_dir():
        raise MissingFileError(
            f"missing folder {ds.mask_dir}: PASCAL-5i needs the SBD-augmented SegmentationClassAug masks"
        )
    build = SplitBuild("pascal", out_dir)
    names = []
    for p in sorted(ds.mask_dir.glob("*.png")):
        if ds.image_path(p.stem).is_file():
            names.append(p.stem)
        else:
            build.notes.append(f"skipped: mask {p} has no image {ds.image_path(p.stem)}")
    if not names:
        raise DataError(f"no usable masks in {ds.mask_dir} (each needs its JPEG in {ds.image_dir})")
    val_txt = ds.voc_dir / "ImageSets" / "Segmentation" / "val.txt"
    if val_txt.is_file():
        val_names = {line for _, line in read_text_lines(val_txt, "image set")}
        build.rule = f"evaluation images from {val_txt}"
    else:
        val_names = {n for n in names if pascal_is_holdout(n)}
        build.rule = "evaluation images = sha1(name) % 5 == 0 (no ImageSets/Segmentation/val.txt)"
    n_classes = ds.n_classes
    results = scan(
        names,
        lambda n: _mask_classes(ds.label_path(n), n_classes),
        progress=progress,
        description="reading PASCAL masks",
        workers=workers,
    )
    lines: dict[tuple[str, int], list[tuple[str, int]]] = {
        (k, f): [] for k in ("trn", "val") for f in range(ds.n_folds)
    }
    stats: dict[str, tuple[set[str], set[int]]] = {"trn": (set(), set()), "val": (set(), set())}
    for name, (classes, note) in zip(names, results):
        if note:
            build.notes.append(note)
        if not classes:
            continue
        kind = "val" if name in val_names else "trn"
        for c in sorted(classes):
            lines[(kind, ds.fold_of(c))].append((name, c))
            stats[kind][0].add(name)
            stats[kind][1].add(c)
    for (kind, fold), items in lines.items():
        path = out_dir / kind / f"fold{fold}.txt"
        _write_lines(path, [f"{n}__{c:02d}" for n, c in sorted(items)])
        build.written.append(path)
    build.counts = {k: (len(v[0]), len(v[1])) for k, v in stats.items()}
    return build


def build_coco_lists(ds, out_dir: Path, force: bool, progress, workers) -> SplitBuild:  # type: ignore[no-untyped-def]
    """COCO-20i's rule (module doc): HSNet's ``trn/fold<K>.pkl`` and ``val/fold<K>.pkl``."""
    from fssbench.datasets.check import scan

    targets = [out_dir / kind / f"fold{f}.pkl" for kind in ("trn", "val") for f in range(ds.n_folds)]
    _refuse_overwrite(targets, force, "coco")
    build = SplitBuild("coco", out_dir, rule=f"{ds.split_scheme} folds")
    n_classes = ds.n_classes
    per_kind: dict[str, dict[int, list[str]]] = {}
    for kind, subset in (("trn", "train2014"), ("val", "val2014")):
        mask_dir = ds.mask_dir / subset
        if not mask_dir.is_dir():
            raise MissingFileError(
                f"missing folder {mask_dir}: COCO-20i needs HSNet's PNG masks under COCO2014/annotations/{subset}/"
            )
        names = []
        for p in sorted(mask_dir.glob("*.png")):
            name = f"{subset}/{p.stem}"
            if ds.image_path(name).is_file():
                names.append(name)
            else:
                build.notes.append(f"skipped: mask {p} has no image {ds.image_path(name)}")
        results = scan(
            names,
            lambda n: _mask_classes(ds.label_path(n, 0), n_classes),
            progress=progress,
            description=f"reading COCO {subset} masks",
            workers=workers,
        )
        by_class: dict[int, list[str]] = {c: [] for c in range(1, n_classes + 1)}
        for name, (classes, note) in zip(names, results):
            if note:
                build.notes.append(note)
            for c in sorted(classes or ()):
                by_class[c].append(f"{name}.jpg")
        per_kind[kind] = by_class
        used = [c for c, v in by_class.items() if v]
        build.counts[kind] = (len({n for v in by_class.values() for n in v}), len(used))
    for fold in range(ds.n_folds):
        novel = set(ds.fold_classes(fold))
        for kind in ("trn", "val"):
            # trn files fill the base classes, val files the novel ones (HSNet's files hold all keys)
            payload = {c - 1: (sorted(v) if (c in novel) == (kind == "val") else []) for c, v in per_kind[kind].items()}
            path = out_dir / kind / f"fold{fold}.pkl"
            _write_bytes(path, pickle.dumps(payload, protocol=3))
            build.written.append(path)
    return build


def build_fss_lists(ds, out_dir: Path, force: bool) -> SplitBuild:  # type: ignore[no-untyped-def]
    """FSS-1000's rule (module doc): ``trn.txt``, ``val.txt``, ``test.txt``."""
    targets = [out_dir / f"{k}.txt" for k in ("trn", "val", "test")]
    _refuse_overwrite(targets, force, "fss")
    if not ds.data_dir.is_dir():
        raise MissingFileError(f"missing folder {ds.data_dir}: put the FSS-1000 class folders there")
    classes = sorted(d.name for d in ds.data_dir.iterdir() if d.is_dir() and any(d.glob("*.jpg")))
    if len(classes) < 3:
        raise DataError(
            f"{ds.data_dir} has {len(classes)} class folders with images; at least 3 are needed for trn/val/test"
        )
    trn, val, test = fss_partition(classes)
    build = SplitBuild("fss", out_dir, rule="classes ordered by sha1(name), cut 520/240/240-proportionally")
    for kind, items in (("trn", trn), ("val", val), ("test", test)):
        path = out_dir / f"{kind}.txt"
        _write_lines(path, items)
        build.written.append(path)
        n_images = sum(len(list((ds.data_dir / c).glob("*.jpg"))) for c in items)
        build.counts[kind] = (n_images, len(items))
    return build
