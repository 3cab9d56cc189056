"""The ``fssbench`` command line.

Each area registers its commands from ``fssbench/commands/<area>.py`` (one ``register(app)``
function each), so this file only builds the app and turns user errors into one line.
"""

from __future__ import annotations

import sys

import typer

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


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors become one red line and a non-zero exit code."""
    try:
        rc = app(args=argv, standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except UserError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]; finished work is kept")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors and friends (typer may vendor its own click)
        if type(exc).__name__ == "Abort":
            sys.exit(1)
        if hasattr(exc, "show") and hasattr(exc, "exit_code") and hasattr(exc, "format_message"):
            exc.show()
            sys.exit(exc.exit_code)
        raise

if __name__ == "__main__":  # pragma: no cover
    main()
