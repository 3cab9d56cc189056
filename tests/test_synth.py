"""The embedded synthetic FSS world: layout, formats, determinism and 'not solvable by colour'."""

from __future__ import annotations

import colorsys
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

from fssbench.errors import UserError
from fssbench.synth import (
    PRESETS,
    fold_class_ids,
    fold_classes,
    generate,
    pretrain_class_names,
    pretrain_classes,
    render_fss_image,
    render_pretrain_batch,
    voc_palette,
)
from fssbench.synth.analysis import (
    colour_nearest_mean_accuracy,
    colour_twin_distances,
    map_colour_prototype_miou,
)
from fssbench.synth.render import MIN_CLASS_PIXELS
from fssbench.synth.world import prepare_out_dir

SEED = 0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "w0"
    generate(out, seed=SEED, size="small", show_progress=False, workers=1)
    return out


@pytest.fixture(scope="module")
def loaded(world: Path) -> dict[str, object]:
    """Every image, mask and listed class of the small world, read back from disk."""
    names = sorted(p.stem for p in (world / "VOC2012" / "JPEGImages").glob("*.jpg"))
    imgs, labs, raw_labs = [], [], []
    for n in names:
        imgs.append(np.asarray(Image.open(world / "VOC2012" / "JPEGImages" / f"{n}.jpg").convert("RGB")))
        png = Image.open(world / "VOC2012" / "SegmentationClassAug" / f"{n}.png")
        raw_labs.append(png)
        labs.append(np.asarray(png))
    entries: dict[str, dict[int, list[tuple[str, int]]]] = {}
    for split in ("trn", "val"):
        entries[split] = {}
        for k in range(4):
            lines = (world / "splits" / "pascal" / split / f"fold{k}.txt").read_text().splitlines()
            entries[split][k] = [(ln.split("__")[0], int(ln.split("__")[1])) for ln in lines]
    classes = [[c for c in range(1, 21) if (lab == c).sum() >= MIN_CLASS_PIXELS] for lab in labs]
    return {"names": names, "imgs": imgs, "labs": labs, "pngs": raw_labs, "entries": entries, "classes": classes}


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "synth.json"
    }


# --- classes -------------------------------------------------------------------------------
def test_presets_sizes() -> None:
    d = PRESETS["default"]
    assert 1500 <= d.n_trn <= 2500 and 400 <= d.n_val <= 600
    # the first object of image i is class i % 20 + 1: every class gets n/20 images as a floor
    assert d.n_trn // 20 >= 60 and d.n_val // 20 >= 20


def test_fold_classes_are_compositional_and_colour_shared() -> None:
    classes = fold_classes()
    assert [c.id for c in classes] == list(range(1, 21))
    assert len({c.key for c in classes}) == 20 and len({c.name for c in classes}) == 20
    for k in range(4):
        assert fold_class_ids(k) == list(range(5 * k + 1, 5 * k + 6))
        fold = fold_classes(k)
        base = [c for c in classes if c.fold != k]
        colours = [c.colour for c in fold]
        # every colour of a fold is used by at least two of its classes and by another fold
        assert all(colours.count(col) >= 2 for col in colours)
        for c in fold:
            assert any(b.colour == c.colour for b in base)
            assert any(b.shape == c.shape for b in base)  # shape cue learnable on base classes
            assert any(b.texture == c.texture for b in base)
        assert len({c.shape for c in fold}) == 5 and len({c.texture for c in fold}) == 5


def test_pretrain_classes_disjoint_and_batch_deterministic() -> None:
    pre = pretrain_classes()
    assert len(pre) >= 40
    assert [c.id for c in pre] == list(range(len(pre)))
    fold_keys = {c.key for c in fold_classes()}
    assert not fold_keys & {c.key for c in pre}
    names = pretrain_class_names()
    assert len(set(names)) == len(names) and not set(names) & {c.name for c in fold_classes()}
    assert all(c.prompt == f"a photo of a {c.name}" for c in pre)

    x, y, m = render_pretrain_batch(3, 6, 48)
    assert x.shape == (6, 48, 48, 3) and x.dtype == np.uint8
    assert y.shape == (6,) and m.shape == (6, 48, 48) and m.dtype == np.uint8
    assert set(np.unique(m)) <= {0, 1} and (0 <= y).all() and (y < len(pre)).all()
    assert (m.reshape(6, -1).mean(1) > 0.08).all()  # one dominant object
    x2, y2, m2 = render_pretrain_batch(3, 6, 48)
    assert np.array_equal(x, x2) and np.array_equal(y, y2) and np.array_equal(m, m2)
    xs, ys, _ = render_pretrain_batch(3, 2, 48, start=4)  # independent of batch boundaries
    assert np.array_equal(xs, x[4:]) and np.array_equal(ys, y[4:])
    x3, _, _ = render_pretrain_batch(4, 6, 48)
    assert not np.array_equal(x, x3)


def _fold_objects_in_pretraining(seed: int, n: int) -> tuple[int, int]:
    """(objects of fold classes, all objects) drawn into pretraining images 0..n-1 of ``seed``."""
    from fssbench.synth.classes import FOLD_KEYS
    from fssbench.synth.render import render_pretrain_scene

    bad = total = 0
    for i in range(n):
        objects = render_pretrain_scene(seed, i, 64)[2].objects
        total += len(objects)
        bad += sum(key in FOLD_KEYS for key, _, _ in objects)
    return bad, total


def test_pretraining_images_never_show_a_fold_class(monkeypatch: pytest.MonkeyPatch) -> None:
    """The zoo's pretraining draw (its training and held-out seeds) holds no fold-class object at
    all: not as main object, distractor, occluder or clutter blob. Without the clutter exclusion
    (the old renderer) the same draw holds some."""
    import fssbench.synth.render as render
    from fssbench.backbones.zoo.train import HELDOUT_SEED, TRAIN_SEED

    n = 256
    for seed in (TRAIN_SEED, HELDOUT_SEED):
        bad, total = _fold_objects_in_pretraining(seed, n)
        assert total > 3 * n and bad == 0, (seed, bad, total)
    # the check can fail: clutter drawn without the exclusion lets fold classes in
    monkeypatch.setattr(render, "FOLD_KEYS", frozenset())
    assert sum(_fold_objects_in_pretraining(seed, n)[0] for seed in (TRAIN_SEED, HELDOUT_SEED)) > 0


def test_clutter_exclusion_leaves_the_fss_world_unchanged() -> None:
    """Excluding fold classes from pretraining clutter must not move a single byte of the FSS
    world (the regression baselines were measured on it): the images and labels of the first 12
    train and val images of seed 0 are pinned."""
    digest = hashlib.sha256()
    for split in ("trn", "val"):
        for i in range(12):
            s = render_fss_image(0, split, i)
            digest.update(s.image.tobytes())
            digest.update(s.label.tobytes())
    assert digest.hexdigest() == "8d3610fb48d7b24f080f77027bda7c44437c6ca3e29b0bb675b3a88a1b6fdee2"


def test_draw_clutter_redraws_excluded_items() -> None:
    from fssbench.synth.render import Canvas, draw_clutter

    def keys(c: Canvas) -> set[tuple[str, str, str]]:
        return {k for k, _, _ in c.objects}

    free = Canvas(np.zeros((64, 64, 3), np.float32))
    draw_clutter(np.random.default_rng(5), free, 400, protect=False)
    common = max(keys(free), key=lambda k: sum(o[0] == k for o in free.objects))
    banned = frozenset({common, ("square", "red", "solid")})
    canvas = Canvas(np.zeros((64, 64, 3), np.float32))
    draw_clutter(np.random.default_rng(5), canvas, 400, protect=False, exclude=banned)
    assert len(canvas.objects) == len(free.objects) and not keys(canvas) & banned


# --- layout and formats ----------------------------------------------------------------------
def test_layout_and_file_formats(world: Path, loaded: dict) -> None:
    for rel in ("VOC2012/JPEGImages", "VOC2012/SegmentationClassAug", "splits/pascal/trn", "splits/pascal/val"):
        assert (world / rel).is_dir()
    assert not (world / ".synth-incomplete").exists()
    lines = (world / "classes.txt").read_text().splitlines()
    assert [ln.split(" ", 1)[0] for ln in lines] == [str(i) for i in range(1, 21)]
    assert lines[0].split(" ", 1)[1] == fold_classes()[0].name
    meta = json.loads((world / "synth.json").read_text())
    assert meta["seed"] == SEED and meta["size"] == "small" and len(meta["classes"]) == 20
    assert meta["counts"]["trn"]["images"] == PRESETS["small"].n_trn
    assert meta["counts"]["val"]["images"] == PRESETS["small"].n_val
    assert {"generated_at", "generator_version", "data_sha256"} <= set(meta)

    names = loaded["names"]
    assert len(names) == PRESETS["small"].n_trn + PRESETS["small"].n_val
    pal = voc_palette()
    for n, png, lab, img in zip(names, loaded["pngs"], loaded["labs"], loaded["imgs"]):
        assert png.mode == "P" and png.getpalette()[: 3 * 21] == pal[: 3 * 21]
        assert set(np.unique(lab)) <= set(range(21)) | {255}
        assert img.shape[:2] == lab.shape and img.dtype == np.uint8
    jpg = Image.open(world / "VOC2012" / "JPEGImages" / f"{names[0]}.jpg")
    assert jpg.format == "JPEG" and jpg.mode == "RGB"
    sizes = {lab.shape for lab in loaded["labs"]}
    assert len(sizes) > 50 and all(96 <= h <= 160 and 96 <= w <= 160 for h, w in sizes)
    assert len({round(h / w, 1) for h, w in sizes}) > 5  # varied aspect ratios


def test_split_lists_match_masks_and_folds(world: Path, loaded: dict) -> None:
    index = {n: i for i, n in enumerate(loaded["names"])}
    listed: dict[str, set[tuple[str, int]]] = {"trn": set(), "val": set()}
    for split in ("trn", "val"):
        for k, ents in loaded["entries"][split].items():
            assert ents, f"{split}/fold{k}.txt is empty"
            assert ents == sorted(ents)
            for name, c in ents:
                assert name.startswith(f"syn_{split}_")
                assert c in fold_class_ids(k)
                assert (loaded["labs"][index[name]] == c).sum() >= MIN_CLASS_PIXELS
                listed[split].add((name, c))
    # complete: every (image, class) with enough labelled pixels is listed, in its split
    for n, cl in zip(loaded["names"], loaded["classes"]):
        split = "trn" if n.startswith("syn_trn_") else "val"
        assert cl, f"{n} has no class"
        assert {(n, c) for c in cl} <= listed[split]
        assert 1 <= len(cl) <= 3
    # train and val are disjoint in names and in pixels
    trn = {n for n, _ in listed["trn"]}
    val = {n for n, _ in listed["val"]}
    assert trn and val and not trn & val
    digest = {n: hashlib.sha256(img.tobytes()).hexdigest() for n, img in zip(loaded["names"], loaded["imgs"])}
    assert not {digest[n] for n in trn} & {digest[n] for n in val}
    # every class occurs in both splits; the cycling first object is (almost) always listed
    for c in range(1, 21):
        assert any(c == cc for _, cc in listed["trn"]) and any(c == cc for _, cc in listed["val"])
    first_ok = [int(n[-6:]) % 20 + 1 in cl for n, cl in zip(loaded["names"], loaded["classes"])]
    assert np.mean(first_ok) > 0.95


def test_boundary_band_surrounds_every_object(loaded: dict) -> None:
    ring = np.ones((3, 3), dtype=bool)
    n_band = 0
    for lab, cl in zip(loaded["labs"], loaded["classes"]):
        for c in cl:
            obj = lab == c
            d1 = ndimage.binary_dilation(obj, ring) & ~obj
            assert d1.any()
            assert (lab[d1] == 255).all(), "a class pixel touches a non-band pixel"
            d2 = ndimage.binary_dilation(obj, ring, iterations=2) & ~ndimage.binary_dilation(obj, ring)
            assert not (lab[d2] == 0).any(), "the band is narrower than 2 px outside"
        band = lab == 255
        n_band += int(band.sum())
        if cl:
            assert band.any()
    total = sum(lab.size for lab in loaded["labs"])
    assert 0.02 < n_band / total < 0.3


# --- determinism -----------------------------------------------------------------------------
def test_cli_same_seed_gives_identical_bytes(world: Path, tmp_path: Path) -> None:
    from fssbench.commands.synth import register

    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # keep "synth" as a sub-command
        pass

    runner = CliRunner()
    res = runner.invoke(app, ["synth", "--help"])
    assert res.exit_code == 0 and "--seed" in res.output and "--size" in res.output

    out = tmp_path / "again"
    res = runner.invoke(app, ["synth", "--out", str(out), "--size", "small", "--seed", str(SEED), "--workers", "2"])
    assert res.exit_code == 0, res.output
    a, b = _file_bytes(world), _file_bytes(out)
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a)  # independent of the number of processes
    meta_a = json.loads((world / "synth.json").read_text())
    meta_b = json.loads((out / "synth.json").read_text())
    assert meta_a["data_sha256"] == meta_b["data_sha256"]

    # a non-empty folder that is not a synth world is refused with one line
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "keep.txt").write_text("mine")
    res = runner.invoke(app, ["synth", "--out", str(junk), "--size", "small"])
    assert isinstance(res.exception, UserError)
    assert "--force" in str(res.exception) and "\n" not in str(res.exception)
    assert sorted(p.name for p in junk.iterdir()) == ["keep.txt"]


def test_force_and_rewrite_prepare_the_folder(world: Path, tmp_path: Path) -> None:
    d = tmp_path / "x"
    (d / "VOC2012" / "JPEGImages").mkdir(parents=True)
    (d / "VOC2012" / "JPEGImages" / "stale.jpg").write_bytes(b"x")
    (d / "notes.txt").write_text("mine")
    with pytest.raises(UserError):
        prepare_out_dir(d, force=False)
    prepare_out_dir(d, force=True)
    assert (d / "notes.txt").read_text() == "mine"
    assert list((d / "VOC2012" / "JPEGImages").iterdir()) == []
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UserError):
        prepare_out_dir(f, force=True)
    with pytest.raises(UserError):
        generate(tmp_path / "y", seed=0, size="huge", show_progress=False)


def test_different_seed_gives_different_data(world: Path) -> None:
    a = render_fss_image(SEED, "val", 3)
    b = render_fss_image(SEED, "val", 3)
    c = render_fss_image(SEED + 1, "val", 3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    assert a.image.shape != c.image.shape or not np.array_equal(a.image, c.image)
    on_disk = np.asarray(Image.open(world / "VOC2012" / "SegmentationClassAug" / "syn_val_000003.png"))
    assert np.array_equal(on_disk, a.label)
    other = render_fss_image(SEED, "trn", 3)  # splits draw from different streams
    assert other.image.shape != a.image.shape or not np.array_equal(other.image, a.image)
    diffs = sum(
        render_fss_image(1, "trn", i).image.tobytes() != render_fss_image(2, "trn", i).image.tobytes() for i in range(5)
    )
    assert diffs == 5


# --- not solvable by colour alone --------------------------------------------------------------
def _unique_colour_world(loaded: dict) -> list[np.ndarray]:
    """A broken world in which every class has its own saturated colour (each check must fail)."""
    pal = np.array([colorsys.hsv_to_rgb(h, 1.0, 1.0) for h in np.linspace(0, 1, 20, endpoint=False)]) * 255
    out = []
    for img, lab in zip(loaded["imgs"], loaded["labs"]):
        img = img.copy()
        for c in range(1, 21):
            img[lab == c] = pal[c - 1]
        out.append(img)
    return out


def test_classes_not_separable_by_colour(loaded: dict) -> None:
    imgs, labs = loaded["imgs"], loaded["labs"]
    acc20, _ = colour_nearest_mean_accuracy(imgs, labs, range(1, 21))
    assert acc20 < 0.4, f"per-pixel colour classifier reaches {acc20:.2f} over the 20 classes"
    for k in range(4):
        acc5, per = colour_nearest_mean_accuracy(imgs, labs, fold_class_ids(k))
        assert acc5 < 0.65, f"fold {k}: colour alone names the class {acc5:.2f} of the time ({per})"
    broken = _unique_colour_world(loaded)
    assert colour_nearest_mean_accuracy(broken, labs, range(1, 21))[0] > 0.9  # the check can fail


def test_every_class_has_a_colour_twin() -> None:
    scenes = [render_fss_image(SEED, "val", i) for i in range(100)]
    distractors = [[s.instances == k + 1 for k, (_, cid, _) in enumerate(s.objects) if cid == 0] for s in scenes]
    imgs = [s.image for s in scenes]
    labs = [s.label for s in scenes]
    d = colour_twin_distances(imgs, labs, range(1, 21), distractors)
    assert len(d) == 20
    assert max(d.values()) < 15, f"classes without a same-colour twin: { {c: round(v) for c, v in d.items() if v >= 15} }"
    # distractors really are look-alikes: many share colour with a class present in their image
    shared = sum(
        any(key[1] == fold_classes()[c - 1].colour for c in s.classes)
        for s in scenes
        for key, cid, _ in s.objects
        if cid == 0
    )
    assert shared > 100
    # broken world: a unique colour per class has no twin
    pal = np.array([colorsys.hsv_to_rgb(h, 1.0, 1.0) for h in np.linspace(0, 1, 20, endpoint=False)]) * 255
    broken = [img.copy() for img in imgs]
    for img, lab in zip(broken, labs):
        for c in range(1, 21):
            img[lab == c] = pal[c - 1]
    assert max(colour_twin_distances(broken, labs, range(1, 21), distractors).values()) > 30


def test_masked_average_colour_prototype_does_not_solve_it(loaded: dict) -> None:
    imgs, labs, classes = loaded["imgs"], loaded["labs"], loaded["classes"]
    scores = []
    for k in range(4):
        miou, info = map_colour_prototype_miou(imgs, labs, classes, fold_class_ids(k), episodes_per_class=15)
        assert info["episodes"] >= 50
        assert miou < 0.5, f"fold {k}: a colour prototype reaches mIoU {miou:.2f} ({info})"
        scores.append(miou)
    assert np.mean(scores) < 0.45
    broken = _unique_colour_world(loaded)
    miou, _ = map_colour_prototype_miou(broken, labs, classes, fold_class_ids(0), episodes_per_class=15)
    assert miou > 0.8  # the same baseline solves a colour-coded world: the check can fail
