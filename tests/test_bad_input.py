"""Bad input from the issue-8 catalogue, driven through the CLI in-process.

Every case must end with exactly one non-empty line on stderr that names the problem and the fix,
a non-zero exit code and no traceback, and must not lose work already done. Cases whose fix lives
in files the bad-input work does not own are marked ``xfail(strict=True)`` with what must change
where; they turn into failures (and so must lose their mark) as soon as the fix lands.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from fssbench.cli import main
from fssbench.paths import writable_dir
from tests import toy  # noqa: F401  (registers toy-s, toy-m, toy-decoder)

try:
    NOBODY = pwd.getpwnam("nobody").pw_uid
except KeyError:  # pragma: no cover - systems without a nobody account
    NOBODY = 65534


# --- driving the CLI -----------------------------------------------------------------------------
def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """``fssbench ARGS`` in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        rc = 0
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out = capsys.readouterr()
    return rc, out.out, out.err


def one_line_error(capsys: pytest.CaptureFixture[str], *args: object, needles: tuple[str, ...] = (), rc: int | None = None) -> str:
    """Run the CLI and check the bad-input contract; returns the error line."""
    code, out, err = cli(capsys, *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err + out, err
    assert code != 0, f"exit code 0 for bad input; stdout: {out!r} stderr: {err!r}"
    if rc is not None:
        assert code == rc, (code, err)
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}: {err!r}"
    line = lines[0]
    for needle in needles:
        assert needle.lower() in line.lower(), f"{needle!r} not in {line!r}"
    return line


def any_of(line: str, *words: str) -> None:
    assert any(w.lower() in line.lower() for w in words), f"none of {words} in {line!r}"


# --- fixtures --------------------------------------------------------------------------------------
def _open_to_all(root: Path) -> None:
    """Readable (and traversable) by every user, so a test can run the CLI as ``nobody``."""
    root.chmod(0o755)
    for base, dirs, files in os.walk(root):
        for d in dirs:
            (Path(base) / d).chmod(0o755)
        for f in files:
            (Path(base) / f).chmod(0o644)


@pytest.fixture(scope="module")
def public() -> Iterator[Path]:
    """A temporary folder readable by everyone (pytest's own are 0o700), holding the small world."""
    base = Path(tempfile.mkdtemp(prefix="fssbench-bad-input-"))
    from fssbench.synth import generate

    generate(base / "synth", seed=0, size="small", force=True, show_progress=False)
    _open_to_all(base)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def world(public: Path) -> Path:
    return public / "synth"


@pytest.fixture()
def work(public: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A per-test folder inside ``public`` (so it is reachable as ``nobody`` too)."""
    path = public / "work" / request.node.name.replace("/", "_").replace("[", "_").replace("]", "_")
    path.mkdir(parents=True)
    path.chmod(0o755)
    path.parent.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


SUITE = """
name: bad
matrix:
  methods: {methods}
  backbones: {backbones}
  folds: {folds}
  shots: [1]
  kinds: [mask]
  seeds: [0]
dataset: {dataset}
protocol: {protocol}
episodes: 4
eval: {eval}
train: {train}
"""

# Fold 1: every class of its baseval split has the two images 1-shot model selection needs in the
# small world (fold 0 does not).
DEFAULTS = {
    "methods": "[prototype]",
    "backbones": "[toy-s]",
    "folds": "[1]",
    "protocol": "{name: hsnet, img_size: 32}",
    "eval": "{batch_size: 2, device: cpu}",
    "train": "{epochs: 1, episodes_per_epoch: 4, batch_size: 2, val_episodes: 2}",
}


def write_suite(path: Path, root: Path | str, **over: str) -> Path:
    fields = {**DEFAULTS, "dataset": f"{{name: pascal, root: '{root}'}}", **over}
    path.write_text(textwrap.dedent(SUITE.format(**fields)))
    path.chmod(0o644)
    return path


@contextmanager
def unwritable(folder: Path) -> Iterator[Path]:
    """``folder`` made unwritable in a way that really fails: mode 0o500, and when the tests run as
    root (who ignores permission bits) the CLI runs with effective uid ``nobody`` meanwhile."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(folder, NOBODY, NOBODY)
    folder.chmod(0o500)
    try:
        if os.geteuid() == 0:
            os.seteuid(NOBODY)
        try:
            try:
                fd, probe = tempfile.mkstemp(dir=folder)
            except OSError:
                pass
            else:  # a file system that ignores permissions: nothing to test here
                os.close(fd)
                os.unlink(probe)
                pytest.skip(f"{folder} stays writable despite mode 0o500 (file system ignores permissions)")
            yield folder
        finally:
            if os.getuid() == 0:
                os.seteuid(0)
    finally:
        folder.chmod(0o700)


# --- (a) non-numeric values in a suite ---------------------------------------------------------------
@pytest.mark.parametrize(
    "over, needles",
    [
        ({"methods": "[toy-decoder]", "train": "{lr: fast, epochs: 1, episodes_per_epoch: 4, batch_size: 2, val_episodes: 2}"}, ("lr", "fast")),
        ({"protocol": "{name: hsnet, img_size: big}"}, ("img_size", "big")),
        ({"eval": "{batch_size: x, device: cpu}"}, ("batch_size",)),
        ({"methods": "[{name: toy-decoder, train: {epochs: ten}}]"}, ("epochs", "ten")),
    ],
    ids=["train.lr", "protocol.img_size", "eval.batch_size", "method.train.epochs"],
)
def test_non_numeric_suite_values(capsys, work, world, over, needles):
    suite = write_suite(work / "s.yaml", world, **over)
    line = one_line_error(capsys, "run", suite, "--results-dir", work / "results", needles=needles)
    any_of(line, "number", "integer")
    assert not (work / "results").exists() or not list((work / "results").glob("*.json")), "work started on a bad suite"


# --- (b) a device name torch does not know -----------------------------------------------------------
def test_unknown_device(capsys, work, world):
    suite = write_suite(work / "s.yaml", world)
    one_line_error(capsys, "run", suite, "--device", "gpu0", needles=("gpu0", "cpu", "cuda"))


# --- (c) rich markup in names and paths --------------------------------------------------------------
def test_markup_in_an_unknown_method_name_is_printed_as_is(capsys, work, world):
    suite = write_suite(work / "s.yaml", world, methods='["[/hsnet]"]')
    one_line_error(capsys, "run", suite, needles=("[/hsnet]", "unknown method"))


def test_markup_in_a_method_label_neither_crashes_nor_hides_the_result(capsys, work, world):
    """A label is part of the run id and so of the result file name: ``[/hsnet]`` must be refused in
    one line or give a result file that `fssbench report` finds (directly in the results folder)."""
    suite = write_suite(work / "s.yaml", world, methods='[{name: prototype, label: "[/hsnet]"}]')
    results = work / "results"
    rc, out, err = cli(capsys, "run", suite, "--results-dir", results)
    assert "Traceback" not in err + out, err
    if rc != 0:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and "label" in lines[0] and "[/hsnet]" in lines[0], err
    else:
        assert len(list(results.glob("*.json"))) == 1, sorted(str(p.relative_to(results)) for p in results.rglob("*.json"))


def test_markup_in_a_generated_dataset_root(capsys, work):
    root = work / "data[old]" / "synth"
    suite = write_suite(work / "s.yaml", "x", dataset=f"{{name: pascal, root: '{root}', generate: {{size: small}}}}")
    rc, out, err = cli(capsys, "run", suite, "--results-dir", work / "results")
    assert rc == 0 and "Traceback" not in err, err
    assert (root / "synth.json").is_file(), "the world must be generated at the literal path"
    assert str(root) in out, f"the path is shown without its [old]: {out!r}"


def test_markup_in_the_results_dir(capsys, work, world):
    suite = write_suite(work / "s.yaml", world)
    results = work / "r[bold]x"
    rc, out, err = cli(capsys, "run", suite, "--results-dir", results)
    assert rc == 0 and "Traceback" not in err, err
    assert str(results) in out and len(list(results.glob("*.json"))) == 1, out


def test_markup_in_an_episode_file_path_is_shown_as_is(capsys, work, world):
    out_file = work / "[bold]e.json"
    rc, out, err = cli(capsys, "episodes", "export", "--dataset", "pascal", "--root", world, "--fold", 1, "--episodes", 3, "--out", out_file)
    assert rc == 0, err
    assert str(out_file) in out
    rc, out, err = cli(capsys, "episodes", "show", out_file)
    assert rc == 0 and str(out_file) in out, out


# --- (d) output folders that cannot be written -----------------------------------------------------
def test_writable_dir_creates_and_checks(work):
    target = work / "a" / "b"
    assert writable_dir(target) == target and target.is_dir()
    (work / "f").write_text("x")
    from fssbench.errors import UserError

    with pytest.raises(UserError, match="is a file, not a folder"):
        writable_dir(work / "f")
    with pytest.raises(UserError, match=r"f is a file, not a folder; choose a path under a folder"):
        writable_dir(work / "f" / "sub")
    with unwritable(work / "ro") as ro:
        with pytest.raises(UserError, match="not writable"):
            writable_dir(ro)
        with pytest.raises(UserError, match="permission denied"):
            writable_dir(ro / "new")


def _file(work: Path) -> Path:
    f = work / "plain-file"
    f.write_text("not a folder\n")
    return f


def test_run_results_dir_is_a_file(capsys, work, world):
    suite = write_suite(work / "s.yaml", world)
    f = _file(work)
    one_line_error(capsys, "run", suite, "--results-dir", f, needles=(str(f), "is a file"))
    assert f.read_text() == "not a folder\n"


def test_run_results_dir_under_a_file(capsys, work, world):
    suite = write_suite(work / "s.yaml", world)
    f = _file(work)
    one_line_error(capsys, "run", suite, "--results-dir", f / "results", needles=(str(f), "is a file"))


def test_run_results_dir_not_writable(capsys, work, world):
    suite = write_suite(work / "s.yaml", world)
    with unwritable(work / "ro") as ro:
        line = one_line_error(capsys, "run", suite, "--results-dir", ro, needles=(str(ro),))
    any_of(line, "not writable", "permission")


def _export(world: Path, out: Path) -> tuple[object, ...]:
    return ("episodes", "export", "--dataset", "pascal", "--root", world, "--fold", 1, "--episodes", 3, "--out", out)


def test_episodes_export_out_is_a_folder(capsys, work, world):
    one_line_error(capsys, *_export(world, work), needles=(str(work), "is a folder", ".json"))


def test_episodes_export_out_under_a_file(capsys, work, world):
    f = _file(work)
    one_line_error(capsys, *_export(world, f / "e.json"), needles=(str(f), "is a file"))


def test_episodes_export_out_not_writable(capsys, work, world):
    with unwritable(work / "ro") as ro:
        line = one_line_error(capsys, *_export(world, ro / "e.json"), needles=(str(ro),))
    any_of(line, "not writable", "permission")


def test_data_splits_out_is_a_file(capsys, work, world):
    f = _file(work)
    one_line_error(capsys, "data", "splits", world, "--dataset", "pascal", "--out", f, needles=(str(f), "is a file"))


def test_data_splits_out_under_a_file(capsys, work, world):
    f = _file(work)
    one_line_error(capsys, "data", "splits", world, "--dataset", "pascal", "--out", f / "s", needles=(str(f), "is a file"))


def test_data_splits_out_not_writable(capsys, work, world):
    with unwritable(work / "ro") as ro:
        line = one_line_error(capsys, "data", "splits", world, "--dataset", "pascal", "--out", ro, needles=(str(ro),))
    any_of(line, "not writable", "permission")


# --- (e) decoder files that are truncated, carry pickled objects, or belong to another method --------
class Payload:
    """Any class: a checkpoint pickling an instance of it needs unsafe loading to read."""


@pytest.fixture(scope="module")
def trained(public: Path, world: Path) -> tuple[Path, Path]:
    """One HSNet and one HM decoder (toy backbone, 1 epoch of 4 episodes) and their results."""
    suite = write_suite(public / "trained.yaml", world, methods="[hsnet, hm]")
    results = public / "trained-results"
    try:
        main(["run", str(suite), "--results-dir", str(results)])
    except SystemExit as exc:
        assert not exc.code, f"training the fixture decoders failed ({exc.code})"
    assert len(list(results.glob("*.json"))) == 2
    return suite, results


def _rerun(work: Path, trained: tuple[Path, Path]) -> tuple[Path, Path, Path, Path]:
    """A copy of the trained results without result files (so evaluation runs again)."""
    suite, results = trained
    copy = work / "results"
    shutil.copytree(results, copy)
    for p in copy.glob("*.json"):
        p.unlink()
    hsnet = next((copy / "decoders").glob("hsnet-*"))
    hm = next((copy / "decoders").glob("hm-*"))
    return suite, copy, hsnet, hm


def test_truncated_best_pt(capsys, work, trained):
    suite, results, hsnet, _ = _rerun(work, trained)
    data = (hsnet / "best.pt").read_bytes()
    (hsnet / "best.pt").write_bytes(data[: len(data) // 2])
    line = one_line_error(capsys, "run", suite, "--results-dir", results, needles=(str(hsnet / "best.pt"),))
    any_of(line, "truncated", "corrupt")
    any_of(line, "delete", "remove", "retrain")
    assert "weights_only" not in line


def test_pickle_bearing_best_pt(capsys, work, trained):
    suite, results, hsnet, _ = _rerun(work, trained)
    ckpt = torch.load(hsnet / "best.pt", map_location="cpu", weights_only=True)
    ckpt["extra"] = Payload()
    torch.save(ckpt, hsnet / "best.pt")
    line = one_line_error(capsys, "run", suite, "--results-dir", results, needles=(str(hsnet / "best.pt"),))
    assert "weights_only" not in line and "trusted source" not in line, "never advise unsafe loading"
    any_of(line, "code", "pickle", "object")


def test_best_pt_of_another_method(capsys, work, trained):
    """An HM decoder evaluated as HSNet (same parameter names, so a bare state dict would load)."""
    suite, results, hsnet, hm = _rerun(work, trained)
    shutil.copy(hm / "best.pt", hsnet / "best.pt")
    line = one_line_error(capsys, "run", suite, "--results-dir", results, needles=(str(hsnet / "best.pt"), "hm", "hsnet"))
    any_of(line, "delete", "remove", "retrain")


def test_best_pt_is_a_folder(capsys, work, trained):
    suite, results, hsnet, _ = _rerun(work, trained)
    (hsnet / "best.pt").unlink()
    (hsnet / "best.pt").mkdir()
    line = one_line_error(capsys, "run", suite, "--results-dir", results, needles=(str(hsnet / "best.pt"),))
    any_of(line, "is a folder", "not a file")


def test_truncated_last_pt_on_resume(capsys, work, trained):
    suite, results, hsnet, _ = _rerun(work, trained)
    (hsnet / "decoder.json").unlink()  # unfinished training: the next run resumes from last.pt
    (hsnet / "best.pt").unlink()
    data = (hsnet / "last.pt").read_bytes()
    (hsnet / "last.pt").write_bytes(data[:100])
    line = one_line_error(capsys, "run", suite, "--results-dir", results, needles=(str(hsnet / "last.pt"),))
    any_of(line, "delete", "remove", "restart")


# --- (f) mask values that are no class of the dataset ------------------------------------------------
def test_mask_value_outside_the_classes_stops_the_run(capsys, work, world):
    root = work / "synth"
    shutil.copytree(world, root)
    first = (root / "splits" / "pascal" / "val" / "fold1.txt").read_text().split()[0]
    name = first.rpartition("__")[0]
    mask_path = root / "VOC2012" / "SegmentationClassAug" / f"{name}.png"
    img = Image.open(mask_path)
    arr = np.array(img)
    arr[:2, :2] = 77  # not a class (1..20), not background, not the 255 boundary
    out = Image.fromarray(arr, mode="P")
    out.putpalette(img.getpalette())
    out.save(mask_path)
    suite = write_suite(work / "s.yaml", root)
    one_line_error(capsys, "run", suite, "--results-dir", work / "results", needles=(str(mask_path), "77", "data check"))


def test_mask_value_check_accepts_classes_background_and_boundary(world):
    from fssbench.datasets import get_dataset

    ds = get_dataset("pascal", world)
    for e in ds.entries(1, "val")[:5]:
        mask, ignore = ds.load_label(e.name, e.class_id)  # the generated masks hold 0, classes and 255
        assert mask.any() and ignore.any()


# --- (g) --only that matches nothing ---------------------------------------------------------------
def test_only_with_a_misspelt_key(capsys, work, world):
    suite = write_suite(work / "s.yaml", world)
    one_line_error(capsys, "run", suite, "--results-dir", work / "r", "--only", "methd=hsnet", needles=("methd", "method"))


@pytest.mark.parametrize("only", ["hsnett", "method=hsnett"])
def test_only_matching_nothing(capsys, work, world, only):
    suite = write_suite(work / "s.yaml", world)
    one_line_error(capsys, "run", suite, "--results-dir", work / "r", "--only", only, needles=(only.split("=")[-1],))


# --- (h) Ctrl-C --------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_during_run_says_what_was_kept(capsys, work, world, monkeypatch, workers):
    """One worker: Ctrl-C as soon as the first run's result is on disk. Two workers (both runs at
    once): the worker evaluating fold 2 is interrupted; the parent says the same line."""
    from fssbench.datasets.pascal import PascalDataset
    from fssbench.workers import can_fork

    if workers > 1 and not can_fork():
        pytest.skip("workers fork (Linux)")
    results = work / "results"
    real = PascalDataset.load_image
    fold2 = {e.rpartition("__")[0] for e in (world / "splits" / "pascal" / "val" / "fold2.txt").read_text().split()}

    def load_image(self, name):
        if (list(results.glob("*.json")) if workers == 1 else name in fold2):
            raise KeyboardInterrupt
        return real(self, name)

    monkeypatch.setattr(PascalDataset, "load_image", load_image)
    suite = write_suite(work / "s.yaml", world, folds="[1, 2]")
    line = one_line_error(capsys, "run", suite, "--results-dir", results, "--workers", workers, rc=130,
                          needles=("interrupted", "1 of 2" if workers == 1 else "of 2", str(results)))
    any_of(line, "again", "continue")
    if workers == 1:
        assert len(list(results.glob("*.json"))) == 1, "the finished run is kept"


def test_ctrl_c_elsewhere_is_one_line(capsys, world, monkeypatch):
    from fssbench.datasets.pascal import PascalDataset

    def check(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(PascalDataset, "check", check)
    one_line_error(capsys, "data", "check", world, "--dataset", "pascal", rc=130, needles=("interrupted", "again"))


# --- (i) messages that mislead -----------------------------------------------------------------------
@pytest.fixture()
def no_weights(monkeypatch: pytest.MonkeyPatch, work: Path) -> Path:
    """No backbone weights anywhere: empty HOME, torch hub and HF caches, no $FSSBENCH_WEIGHTS."""
    import huggingface_hub.constants as hfc

    from fssbench.backbones.weights import ENV_VAR

    home = work / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TORCH_HOME", str(home / "torch"))
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(home / "hf"))
    monkeypatch.delenv(ENV_VAR, raising=False)
    return home


def test_missing_weights_on_run_names_an_option_run_has(capsys, work, world, no_weights):
    suite = write_suite(work / "s.yaml", world, backbones="[in1k-rn50]")
    line = one_line_error(capsys, "run", suite, "--results-dir", work / "r", needles=("resnet50-0676ba61.pth", "--weights-dir"))
    assert "weights_only" not in line
    rc, out, _ = cli(capsys, "run", "--help")
    assert rc == 0 and "--weights-dir" in out, "the message names --weights-dir, so `run` must have it"
    wdir = work / "weights"
    wdir.mkdir()
    one_line_error(capsys, "run", suite, "--results-dir", work / "r", "--weights-dir", wdir, needles=(str(wdir), "resnet50-0676ba61.pth"))


def test_pickle_bearing_weights_never_advise_unsafe_loading(capsys, work, world, no_weights):
    wdir = work / "weights"
    wdir.mkdir()
    torch.save({"conv1.weight": torch.zeros(1), "x": Payload()}, wdir / "resnet50-0676ba61.pth")
    suite = write_suite(work / "s.yaml", world, backbones="[in1k-rn50]")
    line = one_line_error(capsys, "run", suite, "--results-dir", work / "r", "--weights-dir", wdir, needles=(str(wdir / "resnet50-0676ba61.pth"),))
    assert "weights_only" not in line and "trusted source" not in line and "\x1b" not in line
    any_of(line, "pickled", "code")


def test_truncated_weights_file(capsys, work, world, no_weights):
    wdir = work / "weights"
    wdir.mkdir()
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, wdir / "resnet50-0676ba61.pth")
    data = (wdir / "resnet50-0676ba61.pth").read_bytes()
    (wdir / "resnet50-0676ba61.pth").write_bytes(data[: len(data) // 2])
    suite = write_suite(work / "s.yaml", world, backbones="[in1k-rn50]")
    line = one_line_error(capsys, "run", suite, "--results-dir", work / "r", "--weights-dir", wdir, needles=("truncated",))
    assert "weights_only" not in line


def test_weights_dir_that_is_a_file(capsys, work, world, no_weights):
    f = _file(work)
    one_line_error(capsys, "backbones", "--weights-dir", f, needles=(str(f), "is a file"))
    suite = write_suite(work / "s.yaml", world, backbones="[in1k-rn50]")
    one_line_error(capsys, "run", suite, "--results-dir", work / "r", "--weights-dir", f, needles=(str(f), "is a file"))


def _regress_args(work: Path, baseline: Path) -> tuple[object, ...]:
    (work / "res").mkdir(exist_ok=True)
    return ("regress", work / "res", "--baseline", baseline)


@pytest.mark.parametrize(
    "case",
    [
        "data check ROOT=file",
        "episodes export --split-dir=file",
        "episodes export --root=file",
        "episodes show FILE=folder",
        "report RESULTS=file",
        "regress RESULTS=file",
        "regress --baseline=folder",
        "zoo list --dir=file",
        "zoo build --out=file",
        "synth --out=file",
    ],
)
def test_a_file_where_a_folder_belongs_is_named_so(capsys, work, world, case):
    """Every "does not exist" / "not found" message: a path that exists but is of the wrong kind
    says so ("is a file" / "is a folder"), it does not claim the path is missing."""
    f = _file(work)
    args: tuple[object, ...]
    wrong = "is a file"
    if case == "data check ROOT=file":
        args = ("data", "check", f, "--dataset", "pascal")
    elif case == "episodes export --split-dir=file":
        args = ("episodes", "export", "--dataset", "pascal", "--root", world, "--split-dir", f, "--out", work / "e.json")
    elif case == "episodes export --root=file":
        args = ("episodes", "export", "--dataset", "pascal", "--root", f, "--out", work / "e.json")
    elif case == "episodes show FILE=folder":
        args, wrong, f = ("episodes", "show", work), "is a folder", work
    elif case == "report RESULTS=file":
        args = ("report", f, "--out", work / "rep")
    elif case == "regress RESULTS=file":
        args = ("regress", f, "--baseline", work / "b.json")
    elif case == "regress --baseline=folder":
        args, wrong, f = _regress_args(work, work), "is a folder", work
    elif case == "zoo list --dir=file":
        args = ("zoo", "list", "--dir", f)
    elif case == "zoo build --out=file":
        args = ("zoo", "build", "--out", f)
    else:
        args = ("synth", "--out", f, "--size", "small")
    line = one_line_error(capsys, *args, needles=(str(f), wrong))
    assert "does not exist" not in line and "not found" not in line and "missing" not in line


def test_suite_path_that_is_a_folder(capsys, work):
    line = one_line_error(capsys, "run", work, needles=(str(work), "folder"))
    assert "not found" not in line


def test_dataset_root_that_is_a_file(capsys, work):
    f = _file(work)
    suite = write_suite(work / "s.yaml", f)
    line = one_line_error(capsys, "run", suite, needles=(str(f), "is a file"))
    assert "does not exist" not in line


def test_os_errors_nobody_caught_are_one_line(capsys, work, world, monkeypatch):
    """A full disk (or any OSError a command did not turn into a UserError) is one line, not a traceback."""
    import errno

    import fssbench.episodes

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(fssbench.episodes, "atomic_write_text", full)
    out = work / "e.json"
    one_line_error(capsys, *_export(world, out), rc=1, needles=(str(out), "no space left", "free disk space"))


def test_pickle_bearing_released_checkpoint_never_advises_unsafe_loading(capsys, work, world):
    """A released (authors') decoder file named by the suite, read by the method's own loader."""
    ckpt = work / "hsnet-released.pt"
    torch.save({"state_dict": {"hpn_learner.x": torch.zeros(1)}, "x": Payload()}, ckpt)
    suite = write_suite(work / "s.yaml", world, methods=f"[{{name: hsnet, checkpoint: '{ckpt}'}}]")
    line = one_line_error(capsys, "run", suite, "--results-dir", work / "r", needles=(str(ckpt),))
    assert "weights_only" not in line and "trusted source" not in line and "\x1b" not in line


def test_pickle_bearing_zoo_checkpoint_never_advises_unsafe_loading(capsys, work, world):
    """A zoo backbone file in --weights-dir that carries pickled objects (a tampered copy)."""
    from fssbench.backbones.zoo import checkpoint_file

    wdir = work / "weights"
    wdir.mkdir()
    bad = wdir / checkpoint_file("zoo-rn-s")
    torch.save({"x": Payload()}, bad)
    suite = write_suite(work / "s.yaml", world, backbones="[zoo-rn-s]")
    line = one_line_error(capsys, "run", suite, "--results-dir", work / "r", "--weights-dir", wdir, needles=(str(bad),))
    assert "weights_only" not in line and "trusted source" not in line and "\x1b" not in line
