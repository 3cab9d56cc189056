"""The ``fssbench`` command line.

Each area registers its commands from ``fssbench/commands/<area>.py`` (one ``register(app)``
function each), so this file only builds the app and turns user errors into one line.
"""

from __future__ import annotations

import errno
import os
import sys

import typer
from rich.markup import escape

from fssbench.commands import register_all
from fssbench.console import err_console
from fssbench.errors import UserError

app = typer.Typer(
    name="fssbench",
    help="Benchmark and ablation suite for few-shot semantic segmentation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
register_all(app)


INTERRUPTED = (
    "interrupted (Ctrl-C) before the command finished; run it again to finish "
    "(files it had already written are kept)"
)
"""The generic Ctrl-C line; long commands raise ``errors.Interrupted`` with what they kept instead."""

_OS_HINTS = {
    errno.ENOSPC: "free disk space and run the command again",
    errno.EDQUOT: "free space within your quota and run the command again",
    errno.EACCES: "check the permissions or choose another path",
    errno.EPERM: "check the permissions or choose another path",
    errno.EROFS: "the file system is read-only; choose another path",
    errno.ENOTDIR: "a part of the path is a file where a folder is needed; fix the path",
    errno.EISDIR: "the path is a folder where a file is needed; fix the path",
    errno.EEXIST: "something is already at that path; move it away or choose another path",
    errno.ENOENT: "check the path",
}


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system error nobody turned into a ``UserError`` (disk full, a
    path that is a file, no permission): the path, the system's reason and a fix."""
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    hint = _OS_HINTS.get(exc.errno or -1, "check the path and the disk, then run the command again")
    return f"{where + ': ' if where else ''}{reason}; {hint}"


def _error(message: str) -> None:
    """Print a user error; the message is shown literally (a ``[/x]`` in a name is no markup)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors become one red line and a non-zero exit code.

    ``FSSBENCH_DEBUG=1`` re-raises operating-system errors with their traceback (for developers).
    """
    try:
        rc = app(args=argv, standalone_mode=False)
        if rc == 130:  # typer turns Ctrl-C inside a command into ``Exit(130)`` and returns that code
            _error(INTERRUPTED)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except UserError as exc:
        _error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _error(INTERRUPTED)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except OSError as exc:
        if os.environ.get("FSSBENCH_DEBUG"):
            raise
        _error(os_error_line(exc))
        sys.exit(1)
    except Exception as exc:  # click usage errors and friends (typer may vendor its own click)
        if type(exc).__name__ == "Abort":
            sys.exit(1)
        if hasattr(exc, "show") and hasattr(exc, "exit_code") and hasattr(exc, "format_message"):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":  # pragma: no cover
    main()
