"""Bad input found after issue 8 (issue 23): each case is one line naming the problem and the fix,
a non-zero exit code, no traceback, and nothing already computed lost."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fssbench.cli import main
from tests.test_bad_input import cli, one_line_error, public, work, world, write_suite  # noqa: F401 (fixtures)


# --- a list entry whose mask holds no pixel of its class ---------------------------------------------
def _blank(root: Path, name: str, class_id: int) -> Path:
    """Paint ``class_id``'s pixels of ``name``'s mask as background: the list still names the class."""
    path = root / "VOC2012" / "SegmentationClassAug" / f"{name}.png"
    img = Image.open(path)
    arr = np.array(img)
    assert (arr == class_id).any()
    arr[arr == class_id] = 0
    out = Image.fromarray(arr, mode="P")
    out.putpalette(img.getpalette())
    out.save(path)
    return path


def _episodes(root: Path, fold: int = 1, split: str = "val"):
    from fssbench.datasets import get_dataset
    from fssbench.episodes import sample_episodes

    return sample_episodes(get_dataset("pascal", root), fold, 1, 4, 0, split=split).episodes


def test_support_whose_mask_lacks_its_class_is_refused_before_any_work(capsys, work, world):
    root = work / "synth"
    shutil.copytree(world, root)
    spec = _episodes(root)[0]
    mask = _blank(root, spec.supports[0], spec.class_id)
    results = work / "results"
    line = one_line_error(capsys, "run", write_suite(work / "s.yaml", root), "--results-dir", results,
                          needles=(str(mask), f"class {spec.class_id}", spec.supports[0], "data check"))
    assert "no pixel" in line
    assert not list(results.glob("*.json")), "nothing was scored"


def test_query_whose_mask_lacks_its_class_is_refused(capsys, work, world):
    root = work / "synth"
    shutil.copytree(world, root)
    spec = _episodes(root)[1]
    mask = _blank(root, spec.query, spec.class_id)
    one_line_error(capsys, "run", write_suite(work / "s.yaml", root), "--results-dir", work / "r",
                   needles=(str(mask), f"class {spec.class_id}"))


def test_episodes_export_refuses_the_same_entry(capsys, work, world):
    root = work / "synth"
    shutil.copytree(world, root)
    spec = _episodes(root)[0]
    mask = _blank(root, spec.supports[0], spec.class_id)
    one_line_error(capsys, "episodes", "export", "--root", root, "--dataset", "pascal", "--fold", 1, "--shot", 1,
                   "--episodes", 4, "--seed", 0, "--out", work / "e.json", needles=(str(mask),))


def test_training_list_entry_without_its_class_is_refused_before_training(capsys, work, world):
    """A trained method draws from the base classes' training list: checked whole, before any training."""
    from fssbench.datasets import get_dataset

    root = work / "synth"
    shutil.copytree(world, root)
    entry = get_dataset("pascal", root).entries(1, "trn")[-1]
    mask = _blank(root, entry.name, entry.class_id)
    results = work / "results"
    one_line_error(capsys, "run", write_suite(work / "s.yaml", root, methods="[prototype, hsnet]"), "--results-dir", results,
                   needles=(str(mask), "'trn' list"))
    assert not (results / "decoders").exists() or not any((results / "decoders").rglob("*.pt")), "no training started"


def test_other_class_control_checks_its_supports(capsys, work, world):
    """The support-reliance control draws supports from other classes: they are checked too."""
    from fssbench.controls import other_class_specs
    from fssbench.datasets import get_dataset

    root = work / "synth"
    shutil.copytree(world, root)
    ds = get_dataset("pascal", root)
    spec = other_class_specs(ds, _episodes(root), 1, 0)[0]
    mask = _blank(root, spec.supports[0], spec.support_class_id)
    suite = write_suite(work / "s.yaml", root)
    suite.write_text(suite.read_text().replace("seeds: [0]", "seeds: [0]\n  supports: [other-class]"))
    one_line_error(capsys, "run", suite, "--results-dir", work / "r", needles=(str(mask), "control"))


# --- a TorchScript archive (or another zip) where a plain state dict belongs -----------------------
def _torchscript(path: Path) -> Path:
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script's deprecation note
        torch.jit.script(torch.nn.Conv2d(3, 4, 3)).save(str(path))
    return path


def _foreign_zip(path: Path) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "not a checkpoint")
    return path


def _never_unsafe(line: str) -> None:
    assert "weights_only" not in line and "trusted source" not in line and "jit.load" not in line, line


@pytest.mark.parametrize("make", [_torchscript, _foreign_zip])
def test_zoo_checkpoint_that_is_an_archive(capsys, work, world, make):
    from fssbench.backbones.zoo import checkpoint_file

    wdir = work / "weights"
    wdir.mkdir()
    bad = make(wdir / checkpoint_file("zoo-rn-s"))
    suite = write_suite(work / "s.yaml", world, backbones="[zoo-rn-s]")
    line = one_line_error(capsys, "run", suite, "--results-dir", work / "r", "--weights-dir", wdir, needles=(str(bad),))
    _never_unsafe(line)
    assert ("TorchScript" in line) == (make is _torchscript)


@pytest.mark.parametrize("make", [_torchscript, _foreign_zip])
def test_released_decoder_that_is_an_archive(capsys, work, world, make):
    ckpt = make(work / "hsnet-released.pt")
    suite = write_suite(work / "s.yaml", world, methods=f"[{{name: hsnet, checkpoint: '{ckpt}'}}]")
    _never_unsafe(one_line_error(capsys, "run", suite, "--results-dir", work / "r", needles=(str(ckpt),)))


def test_every_reader_of_torch_files_goes_through_the_safe_one():
    """Siblings: no module but the one safe reader calls torch.load on a path."""
    import re

    root = Path(__file__).resolve().parents[1]
    callers = sorted(
        str(p.relative_to(root))
        for base in ("fssbench", "methods")
        for p in (root / base).rglob("*.py")
        if re.search(r"(?<!`)torch\.load\(", p.read_text(encoding="utf-8"))
    )
    # weights.py: read_torch_file itself; zoo/train.py reads an in-memory buffer it has just written
    assert callers == ["fssbench/backbones/weights.py", "fssbench/backbones/zoo/train.py"], callers
