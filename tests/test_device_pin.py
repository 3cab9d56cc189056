"""Issue 23: a machine where CUDA is visible must not run the tests or the CI gates on the GPU (their
baselines were made on CPUs, in float32); `auto` follows $FSSBENCH_DEVICE."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

from fssbench.dispatch import DEVICE_ENV, auto_device
from fssbench.errors import UserError
from fssbench.workspace import resolve_device

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def cuda_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulate a GPU box: CUDA reports itself available."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_tests_run_on_the_cpu_where_cuda_is_visible(cuda_visible):
    assert os.environ[DEVICE_ENV] == "cpu"  # set by conftest for every test
    assert resolve_device("auto").type == "cpu" and resolve_device(None).type == "cpu"


def test_auto_means_cuda_when_nothing_pins_it(cuda_visible, monkeypatch):
    monkeypatch.delenv(DEVICE_ENV)
    assert auto_device() == "cuda" and resolve_device("auto").type == "cuda"


def test_a_bad_pinned_device_names_the_variable(monkeypatch):
    monkeypatch.setenv(DEVICE_ENV, "gpu0")
    with pytest.raises(UserError, match=r"gpu0.*FSSBENCH_DEVICE"):
        resolve_device("auto")


def test_task_entry_point_and_aux_generators_follow_the_pin(cuda_visible):
    """The siblings that resolved `auto` themselves: the executors' task entry point and ControlNet."""
    import inspect

    import fssbench.auxiliary.generators as gen
    import fssbench.executors.task as task

    for mod in (task, gen):
        src = inspect.getsource(mod)
        assert "auto_device()" in src and "cuda.is_available() else" not in src, mod.__name__


@pytest.mark.parametrize("target", ["gate", "test"])
def test_make_runs_the_ci_gates_and_tests_with_the_cpu_pinned(tmp_path, target):
    """Run the Makefile's target with a fake venv whose programs record $FSSBENCH_DEVICE."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "log"
    for prog in ("fssbench", "pytest"):
        exe = venv / "bin" / prog
        exe.write_text(f'#!/bin/sh\necho "{prog} device=$FSSBENCH_DEVICE $*" >> {log}\n')
        exe.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != DEVICE_ENV and not k.startswith("MAKE")}
    subprocess.run(["make", "-s", "-C", str(ROOT), target, f"VENV={venv}"], env=env, check=True, capture_output=True)
    lines = log.read_text().splitlines()
    assert lines and all("device=cpu " in ln for ln in lines), lines
    if target == "gate":
        assert any("run suites/smoke.yaml" in ln for ln in lines) and any("--profile ci" in ln for ln in lines)
