"""Shared fixtures of the benchmarks."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """The embedded world: ``data/synth`` when it exists (``fssbench synth --out data/synth``), else
    generated into a temporary folder first (about 10 s)."""
    root = REPO / "data" / "synth"
    if (root / "synth.json").exists():
        return root
    from fssbench.synth import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, seed=0, force=True, show_progress=False)
    return root
