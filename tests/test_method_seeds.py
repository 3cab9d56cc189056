"""Per-method seeds (``matrix.methods[i].seeds``): one method gets several training seeds on the
same episodes while the others keep the matrix's; the gate then compares their mean."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fssbench.suite import load_suite
from fssbench.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def _suite(tmp_path: Path, seeds: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(textwrap.dedent(f"""
        name: s
        matrix:
          methods: [prototype, {{name: hsnet, seeds: {seeds}}}]
          backbones: [zoo-rn-s]
          folds: [0]
          shots: [1]
          kinds: [mask]
          seeds: [0]
        dataset: {{name: pascal, root: data/synth}}
        protocol: {{name: hsnet, img_size: 64}}
        episodes: 4
    """))
    return p


def test_method_seeds_replace_the_matrix_seeds_for_that_method_only(tmp_path):
    runs = load_suite(_suite(tmp_path, "{train: [0, 1, 2]}"), check_data=False).expand()
    by_method: dict[str, list[dict[str, int]]] = {}
    for r in runs:
        by_method.setdefault(r.config.method, []).append(r.config.seeds)
    assert by_method["prototype"] == [{"episodes": 0, "train": 0, "sampling": 0}]
    assert [s["train"] for s in by_method["hsnet"]] == [0, 1, 2]
    assert {s["episodes"] for s in by_method["hsnet"]} == {0}  # same episodes: paired with prototype
    assert len({r.decoder_id for r in runs if r.config.method == "hsnet"}) == 3


def test_seed_zero_keeps_its_ids(tmp_path):
    """Adding training seeds to a method leaves its seed-0 run and decoder ids (and results) as they were."""
    one = load_suite(_suite(tmp_path, "[0]"), check_data=False).expand()
    three = load_suite(_suite(tmp_path, "{train: [0, 1, 2]}"), check_data=False).expand()
    assert {r.run_id for r in one} <= {r.run_id for r in three}


def test_bad_method_seeds_are_one_line(tmp_path):
    with pytest.raises(UserError, match=r"matrix\.methods\[1\]\.seeds\.train"):
        load_suite(_suite(tmp_path, "{train: [-1]}"), check_data=False)
    with pytest.raises(UserError, match=r"unknown key\(s\) trian in matrix\.methods\[1\]\.seeds"):
        load_suite(_suite(tmp_path, "{trian: [1]}"), check_data=False)


def test_smoke_gates_hm_on_three_training_seeds():
    runs = load_suite(ROOT / "suites" / "smoke.yaml", "quick", check_data=False).expand()
    hm = {r.config.seeds["train"] for r in runs if r.config.method == "hm"}
    assert hm == {0, 1, 2}
    assert {r.config.seeds["train"] for r in runs if r.config.method == "hsnet"} == {0}
