"""Support annotations derived from masks: bbox (BAM protocol), scribble robot, kinds."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from fssbench.annotations import (
    background_region,
    bbox_fill,
    component_boxes,
    derive_annotation,
    scribble_robot,
)
from fssbench.episode import ANNOTATION_KINDS, SupportAnnotation
from fssbench.errors import UserError

EIGHT = np.ones((3, 3), dtype=bool)


def blob_mask(seed: int, h: int = 120, w: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """A random smooth blob mask and a PASCAL-like ignore band around it."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.random((h, w)), rng.uniform(1.0, 8.0))
    mask = (noise > np.quantile(noise, rng.uniform(0.4, 0.97))).astype(np.uint8)
    band = ndimage.binary_dilation(mask, iterations=2) & ~ndimage.binary_erosion(mask, iterations=1)
    return mask, band


# ---------------------------------------------------------------------------------- kinds
def test_mask_kind() -> None:
    mask = np.array([[0, 1, 1], [0, 1, 0], [0, 0, 0]], dtype=np.uint8)
    ign = np.zeros_like(mask, dtype=bool)
    ign[2, 2] = True
    ann = derive_annotation("mask", mask, ign)
    assert isinstance(ann, SupportAnnotation) and ann.kind == "mask"
    assert ann.fg.dtype == np.uint8 and ann.bg.dtype == np.uint8
    np.testing.assert_array_equal(ann.fg, mask)
    np.testing.assert_array_equal(ann.bg, np.array([[1, 0, 0], [1, 0, 1], [1, 1, 0]]))
    np.testing.assert_array_equal(ann.ignore, ign)
    assert ann.ignore is not ign  # a copy


@pytest.mark.parametrize("kind", ["image", "text"])
def test_image_and_text_have_no_masks(kind: str) -> None:
    mask = np.zeros((4, 5), dtype=np.uint8)
    mask[1:3, 1:3] = 1
    ann = derive_annotation(kind, mask, np.zeros((4, 5), dtype=bool))
    assert ann.kind == kind and ann.fg is None and ann.bg is None
    assert ann.ignore.shape == (4, 5) and ann.ignore.dtype == bool


def test_unknown_kind_is_user_error_naming_valid_kinds() -> None:
    with pytest.raises(UserError) as err:
        derive_annotation("polygon", np.zeros((3, 3), np.uint8), np.zeros((3, 3), bool))
    msg = str(err.value)
    assert "polygon" in msg
    for kind in ANNOTATION_KINDS:
        assert kind in msg


def test_shape_mismatch_is_value_error() -> None:
    with pytest.raises(ValueError):
        derive_annotation("mask", np.zeros((3, 3), np.uint8), np.zeros((3, 4), bool))


def test_none_ignore_means_no_ignore() -> None:
    mask = np.zeros((6, 6), np.uint8)
    mask[2:4, 2:4] = 1
    ann = derive_annotation("bbox", mask, None)
    assert not ann.ignore.any()
    assert ann.fg.sum() + ann.bg.sum() == 36


# ----------------------------------------------------------------------------------- bbox
def test_bbox_two_blobs_two_boxes_with_plus_one_extent() -> None:
    mask = np.zeros((10, 12), dtype=np.uint8)
    mask[1, 1:4] = 1  # blob A: row 1, cols 1..3 (an L shape)
    mask[2:4, 1] = 1  # rows 2..3, col 1
    mask[6:8, 7:9] = 1  # blob B: rows 6..7, cols 7..8
    assert component_boxes(mask) == [(1, 1, 5, 5), (6, 7, 9, 10)]
    expected = np.zeros_like(mask)
    expected[1:5, 1:5] = 1  # component rows 1..3 / cols 1..3, box one row and column larger
    expected[6:9, 7:10] = 1
    ann = derive_annotation("bbox", mask, np.zeros(mask.shape, bool))
    np.testing.assert_array_equal(ann.fg, expected)
    np.testing.assert_array_equal(ann.bg, 1 - expected)


def test_bbox_single_pixel_is_two_by_two() -> None:
    mask = np.zeros((5, 5), dtype=np.uint8)
    mask[2, 1] = 1
    fg = bbox_fill(mask)
    assert fg.sum() == 4 and fg[2:4, 1:3].all()


def test_bbox_diagonal_pixels_are_one_8_connected_component() -> None:
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[2, 2] = 1
    mask[3, 3] = 1  # touches (2, 2) only diagonally
    assert component_boxes(mask) == [(2, 2, 5, 5)]
    expected = np.zeros((8, 8), bool)
    expected[2:5, 2:5] = True  # one 3x3 box, not two 2x2 boxes
    np.testing.assert_array_equal(bbox_fill(mask), expected)


def test_bbox_clipped_at_image_border() -> None:
    mask = np.zeros((6, 7), dtype=np.uint8)
    mask[4:6, 5:7] = 1  # touches bottom-right corner
    np.testing.assert_array_equal(bbox_fill(mask), mask.astype(bool))
    mask2 = np.zeros((6, 7), dtype=np.uint8)
    mask2[0, 0] = 1
    assert component_boxes(mask2) == [(0, 0, 2, 2)]


def test_bbox_keeps_ignore_out_of_fg_and_bg() -> None:
    mask = np.zeros((9, 9), dtype=np.uint8)
    mask[2:5, 2:5] = 1
    ign = np.zeros((9, 9), bool)
    ign[5, 5] = True  # inside the +1 extent of the box
    ign[0, 8] = True  # outside
    ign[3, 3] = True  # inside the object
    ann = derive_annotation("bbox", mask, ign)
    box = np.zeros((9, 9), bool)
    box[2:6, 2:6] = True
    np.testing.assert_array_equal(ann.fg.astype(bool), box & ~ign)
    np.testing.assert_array_equal(ann.bg.astype(bool), ~box & ~ign)
    np.testing.assert_array_equal(ann.ignore, ign)
    assert not (ann.fg.astype(bool) & ann.bg.astype(bool)).any()


def test_bbox_empty_mask() -> None:
    ann = derive_annotation("bbox", np.zeros((4, 4), np.uint8), np.zeros((4, 4), bool))
    assert ann.fg.sum() == 0 and ann.bg.sum() == 16


# ------------------------------------------------------------------------------- scribble
def _check_scribble(mask: np.ndarray, ign: np.ndarray) -> SupportAnnotation:
    ann = derive_annotation("scribble", mask, ign)
    fg, bg = ann.fg.astype(bool), ann.bg.astype(bool)
    m = mask.astype(bool)
    assert ann.fg.dtype == np.uint8 and ann.bg.dtype == np.uint8
    assert not (fg & ~m).any(), "fg scribble leaves the mask"
    assert not (fg & ign).any()
    assert not (bg & (m | ign)).any(), "bg scribble touches fg or ignore"
    assert not (bg & ~background_region(mask, ign)).any()
    assert fg.any() == (m & ~ign).any(), "fg scribble empty although the object is not"
    assert bg.any() == (~m & ~ign).any(), "bg scribble empty although the background is not"
    return ann


@pytest.mark.parametrize("seed", range(12))
def test_scribble_inside_regions_random_blobs(seed: int) -> None:
    mask, band = blob_mask(seed)
    ann = _check_scribble(mask, band)
    # with a wide background the bg scribble is not even adjacent to the object or ignore
    near = ndimage.binary_dilation(mask.astype(bool) | band, structure=EIGHT)
    assert not (ann.bg.astype(bool) & near).any()
    # a scribble, not a mask: a small fraction of the object
    assert ann.fg.sum() < 0.5 * mask.sum()


@pytest.mark.parametrize(
    "name",
    ["pixel", "two_pixels", "hline", "diagonal", "ring", "corner", "full", "empty", "speckle", "all_ignored"],
)
def test_scribble_thin_tiny_and_degenerate(name: str) -> None:
    h, w = 40, 50
    mask = np.zeros((h, w), np.uint8)
    ign = np.zeros((h, w), bool)
    if name == "pixel":
        mask[20, 30] = 1
    elif name == "two_pixels":
        mask[5, 5] = mask[6, 6] = 1
    elif name == "hline":
        mask[10, 3:45] = 1
    elif name == "diagonal":
        mask[np.arange(35), np.arange(35)] = 1
    elif name == "ring":
        yy, xx = np.mgrid[:h, :w]
        r = np.hypot(yy - 20, xx - 25)
        mask[(r > 10) & (r < 12)] = 1
    elif name == "corner":
        mask[:6, :6] = 1
    elif name == "full":
        mask[:] = 1
    elif name == "speckle":
        mask[::4, ::4] = 1
        ign[1::4, 1::4] = True
    elif name == "all_ignored":
        mask[10:20, 10:20] = 1
        ign[:] = True
    ann = _check_scribble(mask, ign)
    if name == "pixel":
        assert ann.fg.sum() == 1 and ann.fg[20, 30] == 1


def test_scribble_tiny_object_falls_back_to_interior_pixel() -> None:
    mask = np.zeros((30, 30), np.uint8)
    mask[10:13, 10:13] = 1  # 3x3: no skeleton path of 4 nodes survives
    fg = scribble_robot(mask.astype(bool), thickness=0)
    assert fg.sum() >= 1 and fg[11, 11]


def test_scribble_follows_elongated_object() -> None:
    mask = np.zeros((60, 200), np.uint8)
    mask[20:40, 10:190] = 1
    fg = derive_annotation("scribble", mask, None).fg.astype(bool)
    cols = np.nonzero(fg.any(axis=0))[0]
    assert cols.max() - cols.min() > 100  # runs along the long axis
    rows = np.nonzero(fg.any(axis=1))[0]
    assert rows.max() - rows.min() < 10
    assert ndimage.label(fg, structure=EIGHT)[1] == 1  # one connected stroke


def test_scribble_marks_every_sizeable_object() -> None:
    mask = np.zeros((80, 200), np.uint8)
    mask[10:70, 10:110] = 1  # a big object ...
    mask[30:45, 150:190] = 1  # ... and a much smaller one: each is opened with its own disk
    fg = derive_annotation("scribble", mask, None).fg.astype(bool)
    assert fg[:, :120].any() and fg[:, 140:].any()


def test_scribble_is_deterministic_in_process() -> None:
    mask, band = blob_mask(7)
    a = derive_annotation("scribble", mask, band)
    b = derive_annotation("scribble", mask.copy(), band.copy())
    np.testing.assert_array_equal(a.fg, b.fg)
    np.testing.assert_array_equal(a.bg, b.bg)


_HASH_SNIPPET = """
import hashlib, numpy as np
from scipy import ndimage
from fssbench.annotations import derive_annotation
rng = np.random.default_rng(7)
noise = ndimage.gaussian_filter(rng.random((120, 160)), rng.uniform(1.0, 8.0))
mask = (noise > np.quantile(noise, rng.uniform(0.4, 0.97))).astype(np.uint8)
band = ndimage.binary_dilation(mask, iterations=2) & ~ndimage.binary_erosion(mask, iterations=1)
ann = derive_annotation("scribble", mask, band)
print(hashlib.sha256(ann.fg.tobytes() + ann.bg.tobytes()).hexdigest())
"""


def test_scribble_is_deterministic_across_processes() -> None:
    mask, band = blob_mask(7)
    ann = derive_annotation("scribble", mask, band)
    here = hashlib.sha256(ann.fg.tobytes() + ann.bg.tobytes()).hexdigest()
    env = dict(os.environ, PYTHONHASHSEED="12345")  # a different hash seed than this process
    out = subprocess.run([sys.executable, "-c", _HASH_SNIPPET], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == here
