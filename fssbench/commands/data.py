"""``fssbench data``: check a dataset root, build split lists where none exist."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import NoReturn, Optional

import typer
from rich.markup import escape

from fssbench.console import console, err_console, progress
from fssbench.errors import UserError

data_app = typer.Typer(
    help="Check dataset roots (PASCAL-5i, COCO-20i, FSS-1000) and build split lists.",
    no_args_is_help=True,
)

_ROOT_HELP = "Dataset root: the folder that holds VOC2012/ (pascal), COCO2014/ (coco) or FSS-1000/ (fss)."
_SPLIT_DIR_HELP = (
    "Folder with the split lists (HSNet's data/splits or its <dataset>/ sub-folder); default ROOT/splits/<dataset>."
)
_SCHEME_HELP = "COCO only: fold definition, interleaved (HSNet, default) or consecutive."
_WORKERS_HELP = "Threads that decode files (default: CPU count, at most 8)."


class _RichScan:
    """Adapts a rich ``Progress`` to the datasets' ``ScanProgress`` hook."""

    def __init__(self, prog) -> None:  # type: ignore[no-untyped-def]
        self._prog = prog
        self._task = None

    def start(self, description: str, total: int) -> None:
        if self._task is not None:
            self._prog.update(self._task, visible=False)
        self._task = self._prog.add_task(description, total=total)

    def advance(self, n: int = 1) -> None:
        if self._task is not None:
            self._prog.advance(self._task, n)


def _options(dataset: str, split_dir: Optional[Path], split_scheme: Optional[str]) -> dict[str, object]:
    opts: dict[str, object] = {}
    if split_dir is not None:
        opts["split_dir"] = split_dir
    if split_scheme is not None:
        if dataset.lower() not in ("coco", "coco20i"):
            raise UserError("--split-scheme applies to COCO-20i only; drop it for this dataset")
        opts["split_scheme"] = split_scheme
    return opts


def _exit(code: int) -> NoReturn:
    """Leave with ``code``. ``SystemExit`` rather than ``typer.Exit``: the latter is turned into a
    return value (and so exit status 0) when the app runs with ``standalone_mode=False``."""
    sys.exit(code)


def _fail(exc: UserError) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    _exit(exc.exit_code)


def _call_check(ds, shots: int, scan, workers: Optional[int]) -> list[str]:  # type: ignore[no-untyped-def]
    """``ds.check(shots)``, passing the progress hook and workers when the dataset accepts them."""
    params = inspect.signature(ds.check).parameters
    kwargs: dict[str, object] = {}
    if "progress" in params:
        kwargs["progress"] = scan
    if "workers" in params:
        kwargs["workers"] = workers
    return list(ds.check(shots, **kwargs))


@data_app.command("check")
def check_cmd(
    root: Path = typer.Argument(..., help=_ROOT_HELP),
    dataset: str = typer.Option(..., "--dataset", "-d", help="pascal, coco or fss."),
    shots: int = typer.Option(
        1, "--shots", "-k", min=0, help="Shots you plan to use: every class needs shots + 1 images."
    ),
    split_dir: Optional[Path] = typer.Option(None, "--split-dir", help=_SPLIT_DIR_HELP),
    split_scheme: Optional[str] = typer.Option(None, "--split-scheme", help=_SCHEME_HELP),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", min=1, help=_WORKERS_HELP),
) -> None:
    """Report every problem under ROOT, one line each (missing/corrupt files, bad mask values,
    list entries whose class is not in the mask, size mismatches, classes with fewer than
    shots + 1 images, missing split lists). Exit code 1 when there are problems, 0 otherwise."""
    from fssbench.datasets import get_dataset
    from fssbench.datasets.check import split_summary

    try:
        ds = get_dataset(dataset, root, **_options(dataset, split_dir, split_scheme))
        with progress(transient=True) as prog:
            problems = _call_check(ds, shots, _RichScan(prog), workers)
        summary = None if problems else split_summary(ds)
    except UserError as exc:
        _fail(exc)
    if problems:
        for line in problems:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        n = len(problems)
        console.print(
            f"{n} problem{'s' if n != 1 else ''} in {ds.describe()} (shots={shots})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        _exit(1)
    console.print(f"ok: {ds.describe()}: {summary}", markup=False, highlight=False, soft_wrap=True)


def _splits_help() -> str:
    from fssbench.datasets.splits import SPLIT_RULE

    return (
        "Build split lists from the data where none exist, in HSNet's formats, under OUT "
        "(default ROOT/splits/<dataset>). Existing lists are never overwritten without --force; "
        f"official lists, when present, are used as they are. {SPLIT_RULE}"
    )


@data_app.command("splits", help=_splits_help())
def splits_cmd(
    root: Path = typer.Argument(..., help=_ROOT_HELP),
    dataset: str = typer.Option(..., "--dataset", "-d", help="pascal, coco or fss."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder to write (default ROOT/splits/<dataset>)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing list files."),
    split_scheme: Optional[str] = typer.Option(None, "--split-scheme", help=_SCHEME_HELP),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", min=1, help=_WORKERS_HELP),
) -> None:
    from fssbench.datasets import get_dataset
    from fssbench.datasets.splits import build_splits, default_split_dir
    from fssbench.paths import writable_dir

    try:
        opts = _options(dataset, None, split_scheme)
        # the output folder is checked before the (long) scan of every mask, so a bad --out costs nothing
        ds = get_dataset(dataset, root, **opts)  # a wrong name or root fails before --out is created
        target = out if out is not None else default_split_dir(root, ds.name)
        writable_dir(target, "split-list folder (--out)" if out is not None else "split-list folder")
        with progress(transient=True) as prog:
            build = build_splits(ds, out, force=force, progress=_RichScan(prog), workers=workers)
    except UserError as exc:
        _fail(exc)
    for note in build.notes:
        err_console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    counts = ", ".join(f"{k} {n} images / {c} classes" for k, (n, c) in build.counts.items())
    console.print(
        f"wrote {len(build.written)} {build.dataset} split lists to {build.out_dir} ({build.rule}): {counts}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if build.out_dir.resolve() != default_split_dir(root, build.dataset).resolve():
        console.print(f"use them with --split-dir {build.out_dir}", markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
