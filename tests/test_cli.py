"""The command line as a user meets it: help lists every command, errors are one line, no traceback."""

import subprocess
import sys

import pytest

from fssbench.commands import COMMAND_MODULES

FSSBENCH = [sys.executable, "-m", "fssbench.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*FSSBENCH, *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_command():
    out = run("--help")
    assert out.returncode == 0
    for name in ("synth", "data", "episodes", "backbones", "zoo", "run", "report", "regress"):
        assert name in out.stdout, name
    assert set(COMMAND_MODULES) >= {"synth", "data", "episodes", "backbones", "zoo", "run", "report"}


@pytest.mark.parametrize(
    "args, needle",
    [
        (("data", "check", "/nonexistent/root", "--dataset", "pascal"), "does not exist"),
        (("data", "check", "."), "Missing option"),
        (("episodes", "export", "--dataset", "nope", "--root", ".", "--out", "x.json"), "unknown dataset 'nope'"),
        (("episodes", "show", "/nonexistent.json"), "not found"),
        (("run", "/nonexistent.yaml"), "not found"),
        (("report", "/nonexistent/results"), "does not exist"),
    ],
)
def test_user_errors_are_one_line(args, needle):
    out = run(*args)
    assert out.returncode != 0
    assert needle in out.stderr + out.stdout
    assert "Traceback" not in out.stderr


def test_logs_get_a_wide_console(monkeypatch):
    """Pipes and CI logs are not terminals: without $COLUMNS rich would wrap tables at 80."""
    import io

    from fssbench.console import LOG_WIDTH, _width

    monkeypatch.delenv("COLUMNS", raising=False)
    assert _width(io.StringIO()) == LOG_WIDTH
    monkeypatch.setenv("COLUMNS", "100")
    assert _width(io.StringIO()) is None  # rich honours $COLUMNS itself

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("COLUMNS")
    assert _width(Tty()) is None
