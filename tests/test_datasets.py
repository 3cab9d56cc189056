"""Loaders of PASCAL-5i, COCO-20i and FSS-1000 on tiny roots in the official formats, and split building."""

from __future__ import annotations

import hashlib
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fssbench.datasets import SPLITS, Entry, FSSDataset, get_dataset
from fssbench.datasets.coco import COCO_CLASSES
from fssbench.datasets.io import load_plain_pickle, read_index_mask
from fssbench.datasets.pascal import VOC_CLASSES
from fssbench.datasets.splits import build_splits, fss_partition, pascal_is_holdout, resolve_split_dir
from fssbench.errors import DataError, MissingFileError, UserError
from tests.fixtures_datasets import (
    DEFAULT_FSS_SPLITS,
    coco_layout,
    make_coco_root,
    make_fss_root,
    make_pascal_root,
    pascal_layout,
    truncate_file,
    write_gray_png,
    write_jpeg,
)


@pytest.fixture(scope="module")
def pascal_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pascal_root(tmp_path_factory.mktemp("pascal"))


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_coco_root(tmp_path_factory.mktemp("coco"))


@pytest.fixture(scope="module")
def fss_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fss_root(tmp_path_factory.mktemp("fss"))


def _list_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line]


# --- registry -----------------------------------------------------------------------------------


def test_registry_names_and_aliases(pascal_root: Path, coco_root: Path, fss_root: Path) -> None:
    assert get_dataset("pascal5i", pascal_root).name == "pascal"
    assert get_dataset("COCO20i", coco_root).name == "coco"
    assert get_dataset("fss1000", fss_root).name == "fss"
    with pytest.raises(UserError, match="unknown dataset"):
        get_dataset("voc", pascal_root)
    with pytest.raises(UserError, match="does not exist"):
        get_dataset("pascal", pascal_root / "nope")


def test_sampling_rules(pascal_root: Path, coco_root: Path, fss_root: Path) -> None:
    assert get_dataset("pascal", pascal_root).sampling == "query_cycle"
    assert get_dataset("coco", coco_root).sampling == "class_uniform"
    assert get_dataset("fss", fss_root).sampling == "query_cycle"


# --- PASCAL-5i ----------------------------------------------------------------------------------


def test_pascal_classes_and_folds(pascal_root: Path) -> None:
    ds = get_dataset("pascal", pascal_root)
    assert ds.n_folds == 4
    assert ds.class_names == {i + 1: n for i, n in enumerate(VOC_CLASSES)}
    assert ds.class_names[20] == "tv monitor"
    for k in range(4):
        assert ds.fold_classes(k) == [5 * k + i for i in range(1, 6)]
        assert set(ds.base_classes(k)) == set(range(1, 21)) - set(ds.fold_classes(k))
    with pytest.raises(UserError, match="folds 0..3"):
        ds.fold_classes(4)


def test_pascal_classes_txt(tmp_path: Path) -> None:
    names = {i: f"shape {i}" for i in range(1, 9)}
    root = make_pascal_root(tmp_path, n_classes=8, trn_per_class=1, val_per_class=1, class_names=names)
    ds = get_dataset("pascal", root)
    assert ds.class_names == names
    assert ds.fold_classes(0) == [1, 2] and ds.fold_classes(3) == [7, 8]
    assert {e.class_id for e in ds.entries(1, "val")} == {3, 4}


def test_pascal_entries_follow_hsnet_lists(pascal_root: Path) -> None:
    ds = get_dataset("pascal", pascal_root)
    lists = pascal_root / "splits" / "pascal"

    def read(kind: str, fold: int) -> list[Entry]:
        out = []
        for line in _list_lines(lists / kind / f"fold{fold}.txt"):
            name, cc = line.split("__")
            out.append(Entry(name, int(cc)))
        return out

    for k in range(4):
        others = [j for j in range(4) if j != k]
        assert ds.entries(k, "val") == read("val", k)
        assert ds.entries(k, "trn") == [e for j in others for e in read("trn", j)]
        # baseval: the other folds' val lists without fold k's test-query images (tests/test_baseval.py)
        queries = {e.name for e in read("val", k)}
        held_out = [e for j in others for e in read("val", j) if e.name not in queries]
        assert sorted(ds.entries(k, "baseval"), key=str) == sorted(held_out, key=str)
        assert held_out != [e for j in others for e in read("val", j)]  # the fixture has such images
        novel = set(ds.fold_classes(k))
        assert {e.class_id for e in ds.entries(k, "val")} == novel
        assert not {e.class_id for e in ds.entries(k, "trn")} & novel
        assert not {e.class_id for e in ds.entries(k, "baseval")} & novel
        # model selection never touches training images
        assert not {e.name for e in ds.entries(k, "trn")} & {e.name for e in ds.entries(k, "baseval")}
    # deterministic across instances
    assert get_dataset("pascal", pascal_root).entries(2, "trn") == ds.entries(2, "trn")
    with pytest.raises(UserError, match="unknown split"):
        ds.entries(0, "test")


def test_pascal_multi_class_image_gives_one_entry_per_class(pascal_root: Path) -> None:
    ds = get_dataset("pascal", pascal_root)
    two = next(i for i in pascal_layout() if i.kind == "val" and len(i.classes) == 2)
    every = [e for k in range(4) for e in ds.entries(k, "val")]
    assert sorted(e.class_id for e in every if e.name == two.name) == sorted(two.classes)


def test_pascal_labels_and_ignore(pascal_root: Path) -> None:
    ds = get_dataset("pascal", pascal_root)
    img = next(i for i in pascal_layout() if len(i.classes) == 2)
    raw = read_index_mask(ds.label_path(img.name, 0))
    assert Image.open(ds.label_path(img.name, 0)).mode == "P"
    for cid in img.classes:
        mask, ignore = ds.load_label(img.name, cid)
        assert mask.dtype == np.uint8 and ignore.dtype == bool
        assert mask.shape == ignore.shape == (24, 32)
        assert set(np.unique(mask)) == {0, 1}
        assert np.array_equal(mask == 1, raw == cid)
        assert np.array_equal(ignore, raw == 255)
        assert ignore.any() and not (ignore & (mask == 1)).any()
    mask, _ = ds.load_label(img.name, 13)  # absent class: empty mask
    assert mask.sum() == 0
    image = ds.load_image(img.name)
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8


def test_pascal_split_dir_option(pascal_root: Path, tmp_path: Path) -> None:
    hsnet = tmp_path / "hsnet" / "data" / "splits"
    shutil.copytree(pascal_root / "splits" / "pascal", hsnet / "pascal")
    ref = get_dataset("pascal", pascal_root).entries(1, "trn")
    assert get_dataset("pascal", pascal_root, split_dir=hsnet).entries(1, "trn") == ref
    assert get_dataset("pascal", pascal_root, split_dir=hsnet / "pascal").entries(1, "trn") == ref
    assert resolve_split_dir(pascal_root, None, "pascal") == pascal_root / "splits" / "pascal"


def test_pascal_missing_and_malformed_lists(pascal_root: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    ds = get_dataset("pascal", pascal_root, split_dir=empty)
    with pytest.raises(MissingFileError) as err:
        ds.entries(0, "val")
    assert str(empty / "val" / "fold0.txt") in str(err.value)
    assert "fssbench data splits" in str(err.value)
    bad = tmp_path / "bad"
    shutil.copytree(pascal_root / "splits" / "pascal", bad)
    with open(bad / "val" / "fold0.txt", "a") as fh:
        fh.write("2007_000001-01\n")
    with pytest.raises(DataError, match="malformed line"):
        get_dataset("pascal", pascal_root, split_dir=bad).entries(0, "val")
    wrong = tmp_path / "wrong"
    shutil.copytree(pascal_root / "splits" / "pascal", wrong)
    with open(wrong / "trn" / "fold1.txt", "a") as fh:
        fh.write("2008_000001__01\n")  # class 1 is novel in fold 0: would leak into fold 0's training
    with pytest.raises(DataError, match="belongs to fold 0"):
        get_dataset("pascal", pascal_root, split_dir=wrong).entries(0, "trn")


def test_pascal_missing_and_corrupt_files(tmp_path: Path) -> None:
    root = make_pascal_root(tmp_path, trn_per_class=1, val_per_class=1)
    ds = get_dataset("pascal", root)
    a, b, c = (i.name for i in pascal_layout(trn_per_class=1, val_per_class=1)[:3])
    ds.image_path(a).unlink()
    with pytest.raises(MissingFileError) as err:
        ds.load_image(a)
    assert str(ds.image_path(a)) in str(err.value)
    truncate_file(ds.image_path(b))
    with pytest.raises(DataError) as err2:
        ds.load_image(b)
    assert "corrupt image" in str(err2.value) and str(ds.image_path(b)) in str(err2.value)
    Image.new("RGB", (32, 24), (1, 2, 3)).save(ds.label_path(c, 0))
    with pytest.raises(DataError, match="not a class-index mask"):
        ds.load_label(c, 1)
    ds.label_path(a, 0).write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="corrupt mask"):
        ds.load_label(a, 1)


# --- COCO-20i -----------------------------------------------------------------------------------


def test_coco_classes_and_fold_schemes(coco_root: Path) -> None:
    ds = get_dataset("coco", coco_root)
    assert len(ds.class_names) == 80 and len(COCO_CLASSES) == 80
    assert ds.class_names[1] == "person" and ds.class_names[80] == "toothbrush"
    assert ds.fold_classes(0) == list(range(1, 81, 4))
    assert ds.fold_classes(3) == list(range(4, 81, 4))
    cons = get_dataset("coco", coco_root, split_scheme="consecutive")
    assert cons.fold_classes(1) == list(range(21, 41))
    with pytest.raises(UserError, match="split scheme"):
        get_dataset("coco", coco_root, split_scheme="random")


def test_coco_entries_from_pickles(coco_root: Path) -> None:
    ds = get_dataset("coco", coco_root)
    layout = coco_layout()
    val_names = {f"val2014/{stem}" for stem, _ in layout["val2014"]}
    trn_names = {f"train2014/{stem}" for stem, _ in layout["train2014"]}
    for k in range(4):
        novel = set(ds.fold_classes(k))
        val = ds.entries(k, "val")
        assert {e.class_id for e in val} == novel
        assert {e.name for e in val} <= val_names
        trn = ds.entries(k, "trn")
        assert {e.class_id for e in trn} == set(range(1, 81)) - novel
        assert {e.name for e in trn} <= trn_names
        # every val2014 image of this fixture holds a class of every fold, so each one is a test
        # query of every fold and none is left for model selection (tests/test_baseval.py has
        # a COCO root where baseval covers every base class)
        assert ds.entries(k, "baseval") == []
        # classes ascending, each class's images in list order
        ids = [e.class_id for e in val]
        assert ids == sorted(ids)
    official = load_plain_pickle(coco_root / "splits" / "coco" / "val" / "fold2.pkl")
    assert [e.name + ".jpg" for e in ds.entries(2, "val") if e.class_id == 3] == official[2]


def test_coco_consecutive_scheme_pools_hsnet_lists(coco_root: Path) -> None:
    ds = get_dataset("coco", coco_root, split_scheme="consecutive")
    val = ds.entries(0, "val")
    assert {e.class_id for e in val} == set(range(1, 21))
    assert all(e.name.startswith("val2014/") for e in val)
    assert {e.class_id for e in ds.entries(0, "trn")} == set(range(21, 81))


def test_coco_labels(coco_root: Path, tmp_path: Path) -> None:
    ds = get_dataset("coco", coco_root)
    e = ds.entries(1, "val")[0]
    mask, ignore = ds.load_label(e.name, e.class_id)
    raw = np.asarray(Image.open(ds.label_path(e.name, 0)))
    assert np.array_equal(mask == 1, raw == e.class_id) and mask.sum() > 0
    assert not ignore.any()
    assert ds.load_image(e.name).shape == (*raw.shape, 3)
    # a 255 value, when present, is ignore
    root = make_coco_root(tmp_path, train_per_class=1, val_per_class=1)
    ds2 = get_dataset("coco", root)
    e2 = ds2.entries(0, "val")[0]
    raw2 = np.array(Image.open(ds2.label_path(e2.name, 0)))
    raw2[0, 0] = 255
    write_gray_png(ds2.label_path(e2.name, 0), raw2)
    _, ignore2 = ds2.load_label(e2.name, e2.class_id)
    assert ignore2[0, 0] and ignore2.sum() == 1


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.makedirs, (str(self.marker),))


def test_coco_pickles_are_loaded_restricted(coco_root: Path, tmp_path: Path) -> None:
    splits = tmp_path / "splits"
    shutil.copytree(coco_root / "splits" / "coco", splits)
    marker = tmp_path / "pwned"
    (splits / "val" / "fold0.pkl").write_bytes(pickle.dumps({0: [_Evil(marker)]}))
    ds = get_dataset("coco", coco_root, split_dir=splits)
    with pytest.raises(DataError, match="refusing to load object"):
        ds.entries(0, "val")
    assert not marker.exists()
    (splits / "val" / "fold0.pkl").write_bytes(b"\x80\x03}q\x00(K\x00")  # truncated
    with pytest.raises(DataError, match="corrupt split list"):
        get_dataset("coco", coco_root, split_dir=splits).entries(0, "val")


# --- FSS-1000 -----------------------------------------------------------------------------------


def test_fss_classes_and_split_mapping(fss_root: Path) -> None:
    ds = get_dataset("fss", fss_root)
    everything = sorted(c for v in DEFAULT_FSS_SPLITS.values() for c in v)
    ids = {c: i + 1 for i, c in enumerate(everything)}
    assert ds.n_folds == 1
    assert ds.class_names[ids["hotel_slipper"]] == "hotel slipper"
    assert ds.class_folder(ids["hotel_slipper"]) == "hotel_slipper"
    assert ds.fold_classes(0) == sorted(ids[c] for c in DEFAULT_FSS_SPLITS["test"])
    assert {e.class_id for e in ds.entries(0, "val")} == {ids[c] for c in DEFAULT_FSS_SPLITS["test"]}
    assert {e.class_id for e in ds.entries(0, "baseval")} == {ids[c] for c in DEFAULT_FSS_SPLITS["val"]}
    assert {e.class_id for e in ds.entries(0, "trn")} == {ids[c] for c in DEFAULT_FSS_SPLITS["trn"]}
    with pytest.raises(UserError):
        ds.entries(1, "val")
    for split in SPLITS:
        assert len(ds.entries(0, split)) == 3 * len(
            DEFAULT_FSS_SPLITS[{"trn": "trn", "val": "test", "baseval": "val"}[split]]
        )


def test_fss_order_is_hsnet_order(tmp_path: Path) -> None:
    root = make_fss_root(tmp_path, splits={"trn": ["b", "a"], "val": ["c"], "test": ["e", "d"]}, n_images=11)
    ds = get_dataset("fss", root)
    names = [e.name for e in ds.entries(0, "val")]
    assert names[:4] == ["d/1", "d/10", "d/11", "d/2"]
    assert names[11] == "e/1" and len(names) == 22


def test_fss_labels(fss_root: Path) -> None:
    ds = get_dataset("fss", fss_root)
    for e in (ds.entries(0, "val")[0], next(e for e in ds.entries(0, "val") if e.name.startswith("zucchini/"))):
        mask, ignore = ds.load_label(e.name, e.class_id)
        gray = np.asarray(Image.open(ds.label_path(e.name, 0)).convert("L"))
        assert np.array_equal(mask, (gray >= 128).astype(np.uint8)) and mask.sum() > 0
        assert ignore.dtype == bool and not ignore.any()
    assert Image.open(ds.label_path("zucchini/1", 0)).mode == "RGB"


# --- split building -----------------------------------------------------------------------------


def test_build_pascal_splits_from_image_sets_matches_rule(tmp_path: Path) -> None:
    root = make_pascal_root(tmp_path)
    out = tmp_path / "built"
    build = build_splits(get_dataset("pascal", root), out)
    assert "val.txt" in build.rule
    assert len(build.written) == 8
    for kind in ("trn", "val"):
        for k in range(4):
            ref = (root / "splits" / "pascal" / kind / f"fold{k}.txt").read_bytes()
            assert (out / kind / f"fold{k}.txt").read_bytes() == ref
    assert (out / "val" / "fold0.txt").read_text().endswith("\n")  # HSNet drops the last split('\n') item


def test_build_pascal_splits_sha1_holdout(tmp_path: Path) -> None:
    root = make_pascal_root(tmp_path, with_splits=False, with_image_sets=False)
    build = build_splits(get_dataset("pascal", root))
    assert "sha1" in build.rule
    ds = get_dataset("pascal", root)
    layout = pascal_layout()
    expected_val = {i.name for i in layout if pascal_is_holdout(i.name)}
    assert expected_val == {i.name for i in layout if int(hashlib.sha1(i.name.encode()).hexdigest(), 16) % 5 == 0}
    names_val = {e.name for k in range(4) for e in ds.entries(k, "val")}
    names_trn = {e.name for k in range(4) for e in ds.entries(k, "trn")}
    assert names_val == expected_val
    assert names_trn == {i.name for i in layout} - expected_val
    for k in range(4):
        for e in ds.entries(k, "val"):
            assert e.class_id in ds.fold_classes(k)
            mask, _ = ds.load_label(e.name, e.class_id)
            assert mask.any()


def test_build_refuses_to_overwrite(tmp_path: Path) -> None:
    root = make_pascal_root(tmp_path, trn_per_class=1, val_per_class=1)
    before = (root / "splits" / "pascal" / "trn" / "fold0.txt").read_bytes()
    with pytest.raises(UserError, match="--force"):
        build_splits(get_dataset("pascal", root))
    assert (root / "splits" / "pascal" / "trn" / "fold0.txt").read_bytes() == before
    build = build_splits(get_dataset("pascal", root), force=True)
    assert len(build.written) == 8


def test_build_coco_splits_matches_hsnet_format(tmp_path: Path) -> None:
    root = make_coco_root(tmp_path)
    out = tmp_path / "built"
    build = build_splits(get_dataset("coco", root), out)
    assert build.counts == {"trn": (40, 80), "val": (40, 80)}
    for kind in ("trn", "val"):
        for k in range(4):
            got = load_plain_pickle(out / kind / f"fold{k}.pkl")
            ref = load_plain_pickle(root / "splits" / "coco" / kind / f"fold{k}.pkl")
            assert isinstance(got, dict) and sorted(got) == list(range(80))
            assert {c: sorted(v) for c, v in got.items()} == {c: sorted(v) for c, v in ref.items()}


def test_build_fss_splits(tmp_path: Path) -> None:
    trn, val, test = fss_partition([f"class{i:04d}" for i in range(1000)])
    assert (len(trn), len(val), len(test)) == (520, 240, 240)
    assert fss_partition(["a", "b", "c"]) == fss_partition(["c", "b", "a"])
    assert all(len(part) == 1 for part in fss_partition(["a", "b", "c"]))
    root = make_fss_root(tmp_path, with_splits=False)
    build = build_splits(get_dataset("fss", root))
    classes = sorted(c for v in DEFAULT_FSS_SPLITS.values() for c in v)
    order = sorted(classes, key=lambda c: hashlib.sha1(c.encode()).hexdigest())
    n_trn, n_val = round(9 * 520 / 1000), round(9 * 240 / 1000)
    expect = {
        "trn": sorted(order[:n_trn]),
        "val": sorted(order[n_trn : n_trn + n_val]),
        "test": sorted(order[n_trn + n_val :]),
    }
    for kind, items in expect.items():
        assert _list_lines(root / "splits" / "fss" / f"{kind}.txt") == items
    assert build.counts["trn"] == (3 * n_trn, n_trn)
    ds = get_dataset("fss", root)
    assert len(ds.entries(0, "val")) == 3 * len(expect["test"])


def test_a_dataset_without_a_split_rule_says_so(tmp_path: Path) -> None:
    """The split rule is the dataset's (``write_split_lists``); one without a rule is one line."""
    from fssbench.datasets.pascal import PascalDataset

    class Listed(PascalDataset):
        name = "listed"
        write_split_lists = FSSDataset.write_split_lists

    root = make_pascal_root(tmp_path, trn_per_class=1, val_per_class=1, with_splits=False)
    with pytest.raises(UserError, match="no split-building rule for dataset 'listed'; write its lists by hand"):
        build_splits(Listed(root))
    assert not (root / "splits" / "listed").exists()


def test_build_pascal_skips_unusable_files(tmp_path: Path) -> None:
    root = make_pascal_root(tmp_path, trn_per_class=1, val_per_class=1, with_splits=False)
    ds = get_dataset("pascal", root)
    first = pascal_layout(trn_per_class=1, val_per_class=1)[0].name
    truncate_file(ds.label_path(first, 0))
    write_jpeg(tmp_path / "unused.jpg", np.zeros((4, 4, 3), np.uint8))
    build = build_splits(get_dataset("pascal", root))
    assert any("corrupt mask" in n for n in build.notes)
    assert first not in {e.name for k in range(4) for e in ds.entries(k, "trn")}
