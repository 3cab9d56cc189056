"""Ctrl-C as a terminal sends it: SIGINT to the whole process group of ``fssbench run`` (parent and
forked workers alike), landing during training, during evaluation and between tasks. Whenever it
lands, stderr holds exactly the one "N of M runs finished and kept" line: no worker traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from fssbench.workers import can_fork
from tests.test_bad_input import public, world, write_suite  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not can_fork(), reason="workers fork (Linux)")


def _interrupt(suite: Path, results: Path, ready: Callable[[], bool], delay: float) -> tuple[int, str, str]:
    """Start ``fssbench run`` with 2 workers in its own process group; once ``ready()``, wait ``delay``
    seconds and send SIGINT to the group; return (exit code, stdout, stderr)."""
    env = os.environ | {"PYTHONPATH": str(ROOT), "COLUMNS": "200", "NO_COLOR": "1"}
    entry = "import sys; from tests import toy; from fssbench.cli import main; main(sys.argv[1:])"  # toy-s registered
    cmd = [sys.executable, "-c", entry, "run", str(suite), "--results-dir", str(results), "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    deadline = time.monotonic() + 120
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (or never got ready) before the interrupt: rc {proc.returncode}\n{out}\n{err}")
        time.sleep(0.05)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def _assert_one_clean_line(rc: int, out: str, err: str, results: Path) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err + out and "KeyboardInterrupt" not in err + out, err
    assert rc == 130, (rc, err)
    assert len(lines) == 1 and "interrupted" in lines[0] and str(results) in lines[0], err


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 1.5])
def test_ctrl_c_during_training_is_one_line(tmp_path, world, delay):
    suite = write_suite(tmp_path / "s.yaml", world, methods="[prototype, hsnet]",
                        train="{epochs: 200, episodes_per_epoch: 8, batch_size: 2, val_episodes: 2}")
    results = tmp_path / "results"
    rc, out, err = _interrupt(suite, results, lambda: any((results / "decoders").glob("*/")), delay)
    _assert_one_clean_line(rc, out, err, results)


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.7, 2.0])
def test_ctrl_c_during_evaluation_is_one_line(tmp_path, world, delay):
    """Prototype runs on two folds and shots: several evaluations per worker, so the interrupt can
    land inside an evaluation, between two, or while a worker waits for its next task."""
    suite = write_suite(tmp_path / "s.yaml", world, folds="[1, 2]", episodes="60")
    suite.write_text(suite.read_text().replace("episodes: 4", "episodes: 60").replace("shots: [1]", "shots: [1, 2]"))
    results = tmp_path / "results"
    rc, out, err = _interrupt(suite, results, lambda: (results / "episodes").is_dir(), delay)
    _assert_one_clean_line(rc, out, err, results)
