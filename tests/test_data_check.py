"""``fssbench data check`` and ``fssbench data splits`` on valid and broken roots."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from fssbench.commands.data import register
from fssbench.datasets import get_dataset
from tests.fixtures_datasets import (
    make_coco_root,
    make_fss_root,
    make_pascal_root,
    pascal_layout,
    truncate_file,
    write_gray_png,
    write_jpeg,
    write_palette_png,
)


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # keeps `data` a sub-command even when it is the only one
        pass

    register(app)
    return app


APP = _app()


def run(*args: str | Path):  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(APP, [str(a) for a in args])
    # no traceback: the only exception allowed is the SystemExit of a clean exit code
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def lines(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [line for line in result.output.splitlines() if line.strip()]


def one_line_with(out: list[str], *needles: str) -> str:
    """The single output line that contains all ``needles`` (fails if none or several)."""
    hits = [line for line in out if all(n in line for n in needles)]
    assert len(hits) == 1, f"{needles} matched {len(hits)} lines:\n" + "\n".join(out)
    return hits[0]


# --- valid roots --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dataset, make",
    [("pascal", make_pascal_root), ("coco", make_coco_root), ("fss", make_fss_root)],
)
def test_valid_root_exits_zero_with_one_line_summary(tmp_path: Path, dataset: str, make) -> None:  # type: ignore[no-untyped-def]
    root = make(tmp_path)
    result = run("data", "check", root, "--dataset", dataset)
    assert result.exit_code == 0, result.output
    out = lines(result)
    assert len(out) == 1, result.output
    assert out[0].startswith(f"ok: {dataset} at {root}")
    for split in ("trn", "val", "baseval"):
        assert f"{split} " in out[0] and "images /" in out[0]


def test_valid_pascal_summary_counts(tmp_path: Path) -> None:
    root = make_pascal_root(tmp_path)
    out = lines(run("data", "check", root, "-d", "pascal", "--shots", "1"))
    assert "trn 40 images / 20 classes, val 40 images / 20 classes, baseval 40 images / 20 classes (4 folds)" in out[0]


def test_check_split_dir_option(tmp_path: Path) -> None:
    root = make_pascal_root(tmp_path / "data")
    moved = tmp_path / "hsnet" / "data" / "splits"
    shutil.move(str(root / "splits"), str(moved))
    assert run("data", "check", root, "-d", "pascal").exit_code == 1
    assert run("data", "check", root, "-d", "pascal", "--split-dir", moved).exit_code == 0


# --- broken roots -------------------------------------------------------------------------------


def test_broken_pascal_reports_every_problem_on_its_own_line(tmp_path: Path) -> None:
    root = make_pascal_root(tmp_path)
    ds = get_dataset("pascal", root)
    layout = {i.name: i for i in pascal_layout()}
    # 1. missing image
    ds.image_path("2008_000001").unlink()
    # 2. corrupt (truncated) JPEG
    truncate_file(ds.image_path("2008_000003"), 0.4)
    # 3. mask with unexpected values
    raw = np.array(Image.open(ds.label_path("2007_000002")))
    raw[0, :3] = 42
    write_palette_png(ds.label_path("2007_000002"), raw)
    # 4. list entry whose class is absent from the mask
    assert layout["2007_000001"].classes == (1,)
    with open(root / "splits" / "pascal" / "val" / "fold0.txt", "a") as fh:
        fh.write("2007_000001__03\n")
    # 5. image/mask size mismatch
    write_jpeg(ds.image_path("2008_000005"), np.zeros((30, 40, 3), np.uint8))
    # 6. missing mask
    ds.label_path("2008_000007").unlink()

    result = run("data", "check", root, "--dataset", "pascal")
    assert result.exit_code == 1
    out = lines(result)
    one_line_with(out, "missing image", str(ds.image_path("2008_000001")))
    one_line_with(out, "corrupt image", str(ds.image_path("2008_000003")))
    one_line_with(out, str(ds.label_path("2007_000002")), "unexpected values 42")
    one_line_with(out, "fold0.txt:", "class 3 (bird) is not in mask", str(ds.label_path("2007_000001")))
    one_line_with(out, "size mismatch", str(ds.image_path("2008_000005")), "40x30", "32x24")
    one_line_with(out, "missing mask", str(ds.label_path("2008_000007")))
    assert out[-1].startswith("6 problems in pascal at")
    assert len(out) == 7, result.output


def test_too_few_images_for_shots(tmp_path: Path) -> None:
    root = make_pascal_root(tmp_path)  # every class: 3 images in its trn list and 3 in its val list
    assert run("data", "check", root, "-d", "pascal", "--shots", "2").exit_code == 0
    result = run("data", "check", root, "-d", "pascal", "--shots", "3")
    assert result.exit_code == 1
    out = lines(result)
    short = [line for line in out if "fewer than shots + 1 = 4" in line]
    assert len(short) == 40 and all("has 3 images" in line for line in short)
    one_line_with(out, "val/fold0.txt", "class 2 (bicycle) has 3 images")
    one_line_with(out, "trn/fold3.txt", "class 20 (tv monitor) has 3 images")
    assert out[-1] == f"40 problems in pascal at {root} (shots=3)"
    assert len(out) == 41


def test_missing_split_lists_name_exact_path_and_fix(tmp_path: Path) -> None:
    root = make_pascal_root(tmp_path, trn_per_class=1, val_per_class=1)
    shutil.rmtree(root / "splits")
    result = run("data", "check", root, "-d", "pascal")
    assert result.exit_code == 1
    out = lines(result)
    for kind in ("trn", "val"):
        for k in range(4):
            path = root / "splits" / "pascal" / kind / f"fold{k}.txt"
            line = one_line_with(out, f"missing split list {path}:")
            assert f"fssbench data splits {root} --dataset pascal" in line
    assert len(out) == 9


def test_missing_folders_are_reported_once(tmp_path: Path) -> None:
    root = make_pascal_root(tmp_path)
    shutil.rmtree(root / "VOC2012" / "SegmentationClassAug")
    result = run("data", "check", root, "-d", "pascal")
    assert result.exit_code == 1
    out = lines(result)
    one_line_with(out, "missing folder", "SegmentationClassAug")
    assert len(out) == 2


def test_broken_coco(tmp_path: Path) -> None:
    root = make_coco_root(tmp_path)
    ds = get_dataset("coco", root)
    name = ds.entries(0, "val")[0].name
    raw = np.array(Image.open(ds.label_path(name, 0)))
    raw[0, 0] = 99
    write_gray_png(ds.label_path(name, 0), raw)
    other = ds.entries(1, "trn")[0].name
    ds.image_path(other).write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (root / "splits" / "coco" / "val" / "fold3.pkl").write_bytes(pickle.dumps({0: [print]}))
    result = run("data", "check", root, "--dataset", "coco")
    assert result.exit_code == 1
    out = lines(result)
    one_line_with(out, str(ds.label_path(name, 0)), "unexpected values 99")
    one_line_with(out, "corrupt image", str(ds.image_path(other)))
    one_line_with(out, "fold3.pkl", "refusing to load object builtins.print")
    assert len(out) == 4, result.output


def test_broken_fss(tmp_path: Path) -> None:
    root = make_fss_root(tmp_path)
    data = root / "FSS-1000"
    (data / "fox" / "2.png").unlink()  # missing mask
    write_gray_png(data / "dog" / "1.png", np.zeros((20, 20), np.uint8))  # no foreground
    shutil.rmtree(data / "eagle")  # listed class without folder
    with open(root / "splits" / "fss" / "test.txt", "a") as fh:
        fh.write("abacus\n")  # a training class listed as a test class
    result = run("data", "check", root, "-d", "fss")
    assert result.exit_code == 1
    out = lines(result)
    one_line_with(out, "missing mask", str(data / "fox" / "2.png"))
    one_line_with(out, str(data / "dog" / "1.png"), "no foreground")
    one_line_with(out, "missing folder", str(data / "eagle"))
    one_line_with(out, "test.txt:4", "class 'abacus' is already listed")
    assert len(out) == 5, result.output


def test_user_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    result = run("data", "check", tmp_path / "absent", "-d", "pascal")
    assert result.exit_code == 2 and "does not exist" in result.output
    result = run("data", "check", tmp_path, "-d", "voc")
    assert result.exit_code == 2 and "unknown dataset 'voc'" in result.output
    result = run("data", "check", tmp_path, "-d", "pascal", "--split-scheme", "consecutive")
    assert result.exit_code == 2 and "COCO-20i only" in result.output


# --- data splits --------------------------------------------------------------------------------


def test_splits_command_builds_then_refuses_overwrite(tmp_path: Path) -> None:
    root = make_pascal_root(tmp_path, with_splits=False)
    assert run("data", "check", root, "-d", "pascal").exit_code == 1
    result = run("data", "splits", root, "--dataset", "pascal")
    assert result.exit_code == 0, result.output
    assert "wrote 8 pascal split lists" in result.output
    assert run("data", "check", root, "-d", "pascal").exit_code == 0
    again = run("data", "splits", root, "--dataset", "pascal")
    assert again.exit_code == 2 and "--force" in again.output
    assert run("data", "splits", root, "--dataset", "pascal", "--force").exit_code == 0


def test_splits_command_out_dir_and_help(tmp_path: Path) -> None:
    root = make_fss_root(tmp_path, with_splits=False)
    result = run("data", "splits", root, "-d", "fss", "--out", tmp_path / "mine")
    assert result.exit_code == 0, result.output
    assert f"--split-dir {tmp_path / 'mine'}" in result.output
    assert run("data", "check", root, "-d", "fss", "--split-dir", tmp_path / "mine").exit_code == 0
    help_text = " ".join(run("data", "splits", "--help").output.split())
    assert "sha1" in help_text and "520/240/240" in help_text and "val.txt" in help_text
