"""The model-selection split ``baseval``: held-out images of every base class of a fold, none of them
a test query of that fold, for PASCAL-5i (and the synthetic world it reads), COCO-20i and FSS-1000.

Training picks its best epoch on ``sample_episodes(..., split="baseval")`` (``fssbench.engine.train``),
so the checks are made on those episodes too: with one episode per base class they cover every base
class, and no query or support is an image of the fold's test queries (``val``).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from fssbench.datasets import Entry, get_dataset
from fssbench.datasets.base import FSSDataset
from fssbench.datasets.splits import baseval_entries
from fssbench.episodes import sample_episodes
from tests.fixtures_datasets import make_fss_root, make_pascal_root, write_gray_png, write_jpeg


def _check_fold(ds: FSSDataset, fold: int, *, min_images: int = 2) -> None:
    """baseval of ``fold``: every base class, >= ``min_images`` images each, no test-query image;
    its first len(base classes) episodes cover every base class and never use a test-query image."""
    queries = {e.name for e in ds.entries(fold, "val")}
    base = ds.base_classes(fold)
    held = ds.entries(fold, "baseval")
    assert not {e.name for e in held} & queries, f"fold {fold}: baseval images that are test queries"
    assert {e.class_id for e in held} == set(base), f"fold {fold}: base classes missing from baseval"
    per_class = {c: sum(e.class_id == c for e in held) for c in base}
    assert min(per_class.values()) >= min_images, (fold, per_class)
    episodes = sample_episodes(ds, fold, 1, len(base), seed=0, split="baseval").episodes
    if ds.sampling == "query_cycle":
        assert {e.class_id for e in episodes} == set(base), f"fold {fold}: model selection misses base classes"
    for e in episodes:
        assert e.query not in queries and not set(e.supports) & queries


def test_baseval_entries_drops_test_queries_and_interleaves_classes() -> None:
    candidates = [Entry("a", 7), Entry("b", 7), Entry("c", 7), Entry("d", 3), Entry("e", 3), Entry("b", 3)]
    out = baseval_entries(candidates, [Entry("b", 1), Entry("x", 2)])
    assert out == [Entry("d", 3), Entry("a", 7), Entry("e", 3), Entry("c", 7)]
    assert baseval_entries([], []) == []


def test_pascal_baseval(tmp_path: Path) -> None:
    # every second val image of this root also holds a class of the next fold: a test query there
    ds = get_dataset("pascal", make_pascal_root(tmp_path))
    for fold in range(4):
        _check_fold(ds, fold, min_images=1)


@pytest.fixture(scope="module")
def synth_val_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The val split of the small synthetic world (the images tests train on), without rendering
    its train images: image i of a split depends only on (seed, split, i)."""
    from fssbench.synth import world

    out = tmp_path_factory.mktemp("synth_val")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(world.PRESETS, "val-only", world.Preset("val-only", n_trn=0, n_val=world.PRESETS["small"].n_val))
        world.generate(out, seed=0, size="val-only", show_progress=False, workers=1)
    return out


def test_synth_world_baseval(synth_val_world: Path) -> None:
    """The synthetic world (read by the PASCAL loader): baseval has no test-query image, keeps >= 3
    images of every base class (2-shot model selection), and the smoke suite's 60 model-selection
    episodes see every base class."""
    ds = get_dataset("pascal", synth_val_world)
    for fold in range(4):
        _check_fold(ds, fold, min_images=3)
        smoke = sample_episodes(ds, fold, 1, 60, seed=0, split="baseval").episodes
        assert {e.class_id for e in smoke} == set(ds.base_classes(fold))


def _make_coco_val_root(root: Path) -> Path:
    """val2014 images and HSNet val pickles (interleaved folds): per class c one image of c alone and
    one of c with c+1, which belongs to the next fold (so it is a test query there)."""
    by_class: dict[int, list[str]] = {c: [] for c in range(1, 81)}
    seed = 0
    for c in range(1, 81):
        for classes in ((c,), (c, c % 80 + 1)):
            stem = f"COCO_val2014_{500000 + seed:012d}"
            rng = np.random.default_rng(seed)
            rgb = rng.integers(0, 40, size=(16, 16, 3), dtype=np.uint8)
            mask = np.zeros((16, 16), dtype=np.uint8)
            for j, cid in enumerate(classes):
                mask[2 : 14, 1 + 7 * j : 7 + 7 * j] = cid
                rgb[mask == cid] = (40 + 2 * cid, 200 - cid, 90)
            write_jpeg(root / "COCO2014" / "val2014" / f"{stem}.jpg", rgb)
            write_gray_png(root / "COCO2014" / "annotations" / "val2014" / f"{stem}.png", mask)
            for cid in classes:
                by_class[cid].append(f"val2014/{stem}.jpg")
            seed += 1
    for fold in range(4):
        payload = {c - 1: (v if (c - 1) % 4 == fold else []) for c, v in by_class.items()}
        path = root / "splits" / "coco" / "val" / f"fold{fold}.pkl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(payload, protocol=3))
    return root


@pytest.mark.parametrize("scheme", ["interleaved", "consecutive"])
def test_coco_baseval(tmp_path: Path, scheme: str) -> None:
    ds = get_dataset("coco", _make_coco_val_root(tmp_path), split_scheme=scheme)
    for fold in range(4):
        _check_fold(ds, fold, min_images=1)


def test_fss_baseval(tmp_path: Path) -> None:
    """FSS-1000: baseval is HSNet's val list (the trn classes have no held-out images), disjoint from
    the test images, taken round robin so that n episodes see n of its classes."""
    splits = {"trn": ["a", "b"], "val": ["c", "d", "e", "f"], "test": ["g", "h"]}
    ds = get_dataset("fss", make_fss_root(tmp_path, splits=splits, n_images=3))
    ids = {ds.class_folder(i): i for i in ds.class_names}
    held = ds.entries(0, "baseval")
    assert {e.class_id for e in held} == {ids[c] for c in splits["val"]}
    assert not {e.name for e in held} & {e.name for e in ds.entries(0, "val")}
    assert not {e.name for e in held} & {e.name for e in ds.entries(0, "trn")}
    assert {e.class_id for e in held[:4]} == {ids[c] for c in splits["val"]}
    episodes = sample_episodes(ds, 0, 1, 4, seed=0, split="baseval").episodes
    assert {e.class_id for e in episodes} == {ids[c] for c in splits["val"]}
