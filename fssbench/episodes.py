"""Frozen episodes: sampling, export, loading.

A seed fixes the episodes, and every method sees the same ones: the sampler draws from its own
``numpy.random.default_rng(seed)`` stream (never the global RNG), so no model code can shift them.
An episode list is written with a content hash over the fields that define it (dataset, fold,
split, shot, seed, sampling rule, filters and the episodes themselves; not the data root's path),
so two exports with the same arguments are byte-identical and evaluation can be driven by the
file alone.

Sampling rules (the HSNet code line's):

* ``query_cycle`` (PASCAL-5i, FSS-1000): episode ``i`` takes query ``entries[i % len(entries)]``
  from the fixed-order split list, then ``shot`` distinct supports of the same class, drawn
  without replacement from that class's other images.
* ``class_uniform`` (COCO-20i): a class uniformly, then a query of it, then the supports.
"""

from __future__ import annotations

import json
import os
import tempfile
import weakref
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from fssbench.datasets.base import Entry, FSSDataset
from fssbench.episode import ANNOTATION_KINDS, EpisodeSpec, RawEpisode, RawShot, hash_specs
from fssbench.errors import UserError

FORMAT = "fssbench.episodes/1"


@dataclass
class EpisodeList:
    """A frozen, hashed list of episodes plus the header that gives it meaning."""

    dataset: str
    fold: int
    split: str
    shot: int
    seed: int
    sampling: str
    episodes: list[EpisodeSpec]
    min_fg_pixels: int = 0
    class_names: dict[int, str] = field(default_factory=dict)

    def header(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "dataset": self.dataset,
            "fold": self.fold,
            "split": self.split,
            "shot": self.shot,
            "seed": self.seed,
            "sampling": self.sampling,
            "min_fg_pixels": self.min_fg_pixels,
            "n": len(self.episodes),
        }

    @property
    def hash(self) -> str:
        return hash_specs(self.episodes, self.header())

    def to_json(self) -> str:
        doc = {
            **self.header(),
            "hash": self.hash,
            "class_names": {str(k): v for k, v in sorted(self.class_names.items())},
            "episodes": [s.to_dict() for s in self.episodes],
        }
        return json.dumps(doc, indent=1, sort_keys=False) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file + rename), so a killed process never leaves half a file."""
        return atomic_write_text(Path(path), self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "EpisodeList":
        path = Path(path)
        if path.is_dir():
            raise UserError(f"episode file '{path}' is a folder, not a file; pass the JSON file `fssbench episodes export` wrote")
        if not path.is_file():
            raise UserError(f"episode file '{path}' not found; create it with `fssbench episodes export`")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict):
                raise ValueError(f"a JSON {type(doc).__name__}, not an object")
            if doc.get("format") != FORMAT:
                raise ValueError(f"format {doc.get('format')!r}")
            lst = cls(
                dataset=doc["dataset"],
                fold=int(doc["fold"]),
                split=doc["split"],
                shot=int(doc["shot"]),
                seed=int(doc["seed"]),
                sampling=doc["sampling"],
                min_fg_pixels=int(doc.get("min_fg_pixels", 0)),
                episodes=[EpisodeSpec.from_dict(d) for d in doc["episodes"]],
                class_names={int(k): v for k, v in doc.get("class_names", {}).items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise UserError(f"episode file '{path}' is not a valid {FORMAT} file ({reason}); re-export it") from None
        if lst.hash != doc.get("hash"):
            raise UserError(f"episode file '{path}' fails its content hash (edited or truncated); re-export it")
        return lst


def atomic_write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _group(entries: Sequence[Entry]) -> dict[int, list[str]]:
    by_class: dict[int, list[str]] = defaultdict(list)
    for e in entries:
        if e.name not in by_class[e.class_id]:
            by_class[e.class_id].append(e.name)
    return by_class


_SHOWN: "weakref.WeakKeyDictionary[FSSDataset, set[tuple[str, int]]]" = weakref.WeakKeyDictionary()
"""Per dataset object, the (image, class) pairs already seen to show their class (each label read once)."""


def check_class_shown(dataset: FSSDataset, pairs: Iterable[tuple[str, int]], where: str) -> None:
    """Refuse an image whose mask holds no pixel of the class its list entry names.

    Such an entry (a list says the class is there, the mask says otherwise) would be scored as an
    episode whose support does not show its class, or whose query has nothing to find: no FSS
    benchmark means that. ``sample_episodes`` checks every image of the episodes it draws, and the
    runner checks whole training lists before any work, so a run never starts on one.
    """
    shown = _SHOWN.setdefault(dataset, set())
    for name, class_id in dict.fromkeys((str(n), int(c)) for n, c in pairs):
        if (name, class_id) in shown:
            continue
        mask, _ = dataset.load_label(name, class_id)
        if not bool(np.asarray(mask).any()):
            label = dataset.class_names.get(class_id, "?")
            raise UserError(
                f"{where}: image '{name}' is listed as class {class_id} ({label}) but its mask "
                f"{dataset.label_path(name, class_id)} has no pixel of that class; fix the mask or remove the "
                f"line from the list (`fssbench data check {dataset.root} --dataset {dataset.name}` lists every such line)"
            )
        shown.add((name, class_id))


def episode_images(specs: Iterable[EpisodeSpec]) -> list[tuple[str, int]]:
    """Every (image, class) pair an episode list uses: each query with its class, each support with its own."""
    pairs: list[tuple[str, int]] = []
    for s in specs:
        pairs.append((s.query, s.class_id))
        pairs.extend((name, s.support_class_id) for name in s.supports)
    return pairs


def filter_small_objects(dataset: FSSDataset, entries: Sequence[Entry], min_fg_pixels: int) -> list[Entry]:
    """Drop entries whose class covers fewer than ``min_fg_pixels`` pixels (PFENet/OSLSM: 2*32*32)."""
    if min_fg_pixels <= 0:
        return list(entries)
    kept = []
    for e in entries:
        mask, _ = dataset.load_label(e.name, e.class_id)
        if int(mask.sum()) >= min_fg_pixels:
            kept.append(e)
    return kept


def sample_episodes(
    dataset: FSSDataset,
    fold: int,
    shot: int,
    n: int,
    seed: int,
    *,
    split: str = "val",
    min_fg_pixels: int = 0,
    sampling: str | None = None,
) -> EpisodeList:
    """Draw ``n`` episodes of ``shot`` supports from ``split`` of ``fold``, fixed by ``seed``."""
    dataset.check_fold(fold)
    if shot < 0:
        raise UserError(f"--shot must be >= 0, got {shot}")
    if n <= 0:
        raise UserError(f"--episodes must be > 0, got {n}")
    sampling = sampling or dataset.sampling
    if sampling not in ("query_cycle", "class_uniform"):
        raise UserError(f"unknown sampling rule '{sampling}'; use query_cycle or class_uniform")
    entries = filter_small_objects(dataset, dataset.entries(fold, split), min_fg_pixels)
    if not entries:
        raise UserError(f"{dataset.name} fold {fold} split '{split}' has no entries; run `fssbench data check`")
    by_class = _group(entries)
    short = {c: len(v) for c, v in by_class.items() if len(v) < shot + 1}
    if short:
        detail = ", ".join(f"class {c} has {k}" for c, k in sorted(short.items()))
        raise UserError(
            f"{shot}-shot episodes need {shot + 1} images per class in fold {fold} '{split}': {detail}; "
            "use fewer shots or more data"
        )
    rng = np.random.default_rng(seed)
    classes = sorted(by_class)
    specs: list[EpisodeSpec] = []
    for i in range(n):
        if sampling == "query_cycle":
            entry = entries[i % len(entries)]
            cls, query = entry.class_id, entry.name
        else:
            cls = classes[int(rng.integers(len(classes)))]
            pool = by_class[cls]
            query = pool[int(rng.integers(len(pool)))]
        candidates = [name for name in by_class[cls] if name != query]
        picks = rng.choice(len(candidates), size=shot, replace=False) if shot else []
        specs.append(EpisodeSpec(i, cls, query, tuple(candidates[int(j)] for j in picks)))
    check_class_shown(dataset, episode_images(specs), f"{dataset.name} fold {fold} '{split}' episodes")
    return EpisodeList(
        dataset=dataset.name,
        fold=fold,
        split=split,
        shot=shot,
        seed=seed,
        sampling=sampling,
        min_fg_pixels=min_fg_pixels,
        episodes=specs,
        class_names={c: dataset.class_names[c] for c in classes},
    )


def load_raw_episode(dataset: FSSDataset, spec: EpisodeSpec, fold: int, kind: str) -> RawEpisode:
    """Load an episode at original resolution and derive the support annotation of ``kind``."""
    from fssbench.annotations import derive_annotation

    if kind not in ANNOTATION_KINDS:
        raise UserError(f"unknown annotation kind '{kind}'; choose one of: {', '.join(ANNOTATION_KINDS)}")
    query_image = dataset.load_image(spec.query)
    query_mask, query_ignore = dataset.load_label(spec.query, spec.class_id)
    shots = []
    for name in spec.supports:
        image = dataset.load_image(name)
        mask, ignore = dataset.load_label(name, spec.support_class_id)
        shots.append(RawShot(name=name, image=image, annotation=derive_annotation(kind, mask, ignore)))
    return RawEpisode(
        spec=spec,
        fold=fold,
        class_name=dataset.class_names[spec.class_id],
        kind=kind,
        query_image=query_image,
        query_mask=query_mask,
        query_ignore=query_ignore,
        shots=shots,
        support_class_name=None if spec.support_class is None else dataset.class_names[spec.support_class],
    )
