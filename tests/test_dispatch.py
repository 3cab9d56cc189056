"""The CPU kernel dispatch pin (fssbench.dispatch): the same training under two dispatch levels
gives identical weights with the pin, and different weights without it (so the check can fail)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from fssbench.dispatch import OPT_OUT, X86_PIN, dispatch_provenance, pin_cpu_dispatch
from fssbench.results import environment

PROBE = Path(__file__).parent / "scripts" / "dispatch_probe.py"
ROOT = Path(__file__).resolve().parents[1]
LOWER = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE"}
"""Another machine's dispatch, simulated: every library one level below AVX2."""

x86_avx2 = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64") or "avx2" not in Path("/proc/cpuinfo").read_text(errors="ignore"),
    reason="the pin is for x86-64 machines with AVX2",
)


def _probe(**env: str) -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if k not in X86_PIN and k != OPT_OUT}
    full |= {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"} | env
    out = subprocess.run([sys.executable, str(PROBE)], env=full, capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@x86_avx2
@pytest.mark.slow
def test_two_dispatch_levels_train_identical_weights_with_the_pin_and_not_without():
    native, lower = _probe(), _probe(**LOWER)
    assert native["capability"] == lower["capability"] == "AVX2"  # the pin overrode the ambient level
    assert native["sha256"] == lower["sha256"]
    unpinned_native = _probe(**{OPT_OUT: "native"})
    unpinned_lower = _probe(**{OPT_OUT: "native"}, **LOWER)
    assert unpinned_lower["capability"] == "DEFAULT"
    # Without the pin the two levels train different weights: the check above can fail.
    assert unpinned_native["sha256"] != unpinned_lower["sha256"]
    # The pinned level is this (AVX2) machine's native one: numbers made here before the pin hold.
    assert unpinned_native["sha256"] == native["sha256"]


def test_pin_overrides_ambient_values_and_respects_the_opt_out(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    env = {"ATEN_CPU_CAPABILITY": "default"}
    monkeypatch.delenv(OPT_OUT, raising=False)
    assert pin_cpu_dispatch(env) == X86_PIN and env["ATEN_CPU_CAPABILITY"] == "avx2"
    monkeypatch.setenv(OPT_OUT, "native")
    env = {"ATEN_CPU_CAPABILITY": "default"}
    assert pin_cpu_dispatch(env) == {} and env == {"ATEN_CPU_CAPABILITY": "default"}


def test_no_pin_off_x86(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    monkeypatch.delenv(OPT_OUT, raising=False)
    env: dict[str, str] = {}
    assert pin_cpu_dispatch(env) == {} and env == {}


def test_every_result_records_its_dispatch():
    env = environment()
    prov = dispatch_provenance()
    assert env["cpu_capability"] == prov["cpu_capability"]
    assert env["cpu_dispatch"] in ("pinned", "native")
