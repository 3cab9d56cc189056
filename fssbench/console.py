"""Shared rich consoles and progress bars, so all long work looks and behaves the same."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import IO, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

LOG_WIDTH = 132


def _width(stream: IO[str]) -> int | None:
    """Terminals and ``$COLUMNS`` decide the width; elsewhere (CI logs, files, pipes) rich would
    assume 80 columns and wrap every table row, so logs get ``LOG_WIDTH``."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return None if tty or os.environ.get("COLUMNS") else LOG_WIDTH


console = Console(width=_width(sys.stdout))
err_console = Console(stderr=True, width=_width(sys.stderr))


@contextmanager
def progress(transient: bool = False) -> Iterator[Progress]:
    """A progress display on stderr (stdout stays clean for data).

    On a terminal the bars are live; elsewhere (logs, pipes) rich prints their final state once
    when the work ends. When the work fails (an error, Ctrl-C) the bars are dropped instead, so
    the one-line error is all that is left on stderr, not a half-filled bar above it. Task
    descriptions are rich markup: escape user-provided text in them (``rich.markup.escape``).
    """
    with Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
    ) as prog:
        try:
            yield prog
        except BaseException:
            prog.live.transient = True
            raise
