"""User-facing errors.

Anything a user can cause (a wrong config, a missing file, an unknown name) raises ``UserError``
with one line that names the problem and the fix. The CLI prints that line and exits non-zero,
never a traceback. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; ``str(err)`` is the single line shown to them."""

    exit_code: int = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class MissingFileError(UserError):
    """A file the user must provide (dataset file, weights) is absent."""


class DataError(UserError):
    """A dataset file exists but is unusable (corrupt image, unexpected mask values)."""


class Interrupted(UserError):
    """Ctrl-C during long work; the message says what was kept and how to continue
    (e.g. ``interrupted: 3 of 12 runs finished and kept in results/x; run the same command again
    to continue``). Exit code 130, the shell's code for SIGINT."""

    exit_code = 130
