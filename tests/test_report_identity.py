"""Cell identity: a cell averages only runs that differ in seeds and bookkeeping; rows that would
read alike get distinguishable labels; the regression baseline is keyed by the same identity."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fixtures_results import make_run, write_grid, write_run, invoke, report_app  # noqa: E402

from fssbench.errors import UserError  # noqa: E402
from fssbench.regress import cell_key, compare, current_cells, load_baseline, run_regress  # noqa: E402
from fssbench.report import (  # noqa: E402
    NON_IDENTITY_KEYS,
    cell_identity,
    compute_cells,
    disambiguate,
    run_seeds,
    seeds_label,
)

FAST = ["--n-boot", "60", "--n-perm", "100"]


@pytest.fixture(scope="module")
def app():
    return report_app()


BASE = make_run().config


@pytest.mark.parametrize("key", sorted(NON_IDENTITY_KEYS))
def test_seeds_and_bookkeeping_are_not_identity(key):
    other = {**BASE, key: {"episodes": 9, "train": 9, "sampling": 9} if key == "seeds" else "something else"}
    assert cell_identity(other) == cell_identity(BASE)


@pytest.mark.parametrize("key, value", [
    ("root", "/other/pascal"), ("protocol_settings", {"name": "hsnet", "use_original_imgsize": True}), ("episodes", 1000),
    ("method_options", {"n_eval_samples": 4}),  # an evaluation option is identity too
    ("supports", "other-class"), ("checkpoint", "hsnet_fold0.pt"), ("profile", "full"), ("dataset_options", {"aug": 1}),
    ("brand_new_key", 1),  # a key a later fssbench adds is identity by default
])
def test_everything_else_is_identity(key, value):
    assert cell_identity({**BASE, key: value}) != cell_identity(BASE)


def test_legacy_seed_stands_for_all_three_seeds():
    assert run_seeds({"seed": 3}) == {"episodes": 3, "train": 3, "sampling": 3}
    assert run_seeds({"seeds": {"episodes": 0, "train": 1, "sampling": 0}}) == {"episodes": 0, "train": 1, "sampling": 0}
    assert seeds_label(run_seeds({"seed": 3})) == "3"
    assert seeds_label({"episodes": 0, "train": 1, "sampling": 0}) == "e0 t1 s0"


def _cells(runs, fold=0):
    c = compute_cells(runs, n_boot=50)
    return c[(c.metric == "miou") & (c.fold == fold)]


def test_seeds_average_into_one_cell_with_n():
    runs = [make_run(miou=60.0, train_seed=0), make_run(miou=62.0, train_seed=1), make_run(miou=64.0, train_seed=2)]
    cells = _cells(runs)
    assert len(cells) == 1
    cell = cells.iloc[0]
    assert cell.value == pytest.approx(62.0) and cell.n_runs == 3 and cell.n_seeds == 3 and cell.sd == pytest.approx(2.0)


@pytest.mark.parametrize("config", [{"episodes": 1000}, {"profile": "full"}, {"root": "/data/other"},
                                    {"protocol_settings": {"name": "hsnet", "size": 473}}])
def test_runs_that_differ_never_merge_and_labels_tell_them_apart(config):
    runs = [make_run(miou=60.0), make_run(miou=50.0, config=config)]
    cells = _cells(runs)
    assert sorted(cells.value) == pytest.approx([50.0, 60.0]) and set(cells.n_runs) == {1}
    labels = list(cells.label)
    assert len(set(labels)) == 2 and all(lab.startswith("hsnet [") for lab in labels)
    key, value = next(iter(config.items()))
    shown = f"{key}.size=473" if key == "protocol_settings" else f"{key}={value}"
    assert any(shown in lab for lab in labels)


def test_labels_stay_plain_when_nothing_collides():
    cells = _cells([make_run(method="a", miou=60.0), make_run(method="b", miou=50.0, config={"profile": "full"})])
    assert set(cells.label) == {"a", "b"}


def test_disambiguate_unit():
    labs = disambiguate(["m", "m", "m", "n"], [{"a": 1, "s": {"x": 1}}, {"a": 2, "s": {"x": 1}}, {"a": 1, "s": {"x": 2}}, {"a": 9}])
    assert labs == ["m [a=1, s.x=1]", "m [a=2, s.x=1]", "m [a=1, s.x=2]", "n"]
    # same label but different group (e.g. backbone column): not a collision
    assert disambiguate(["m", "m"], [{"a": 1}, {"a": 2}], groups=["r50", "vit"]) == ["m", "m"]


def test_a_checkpoint_per_fold_keeps_one_row_with_a_fold_mean():
    runs = [make_run(fold=f, miou=60.0 + f, config={"checkpoint": f"released/hsnet_fold{f}.pt"}) for f in range(2)]
    cells = compute_cells(runs, n_boot=50)
    miou = cells[cells.metric == "miou"]
    assert len(set(miou.row)) == 1 and list(miou.fold) == [0, 1, "mean"]
    mean = miou[miou.fold == "mean"].iloc[0]
    assert mean.value == pytest.approx(60.5)
    assert json.loads(mean.config)["checkpoint"] == {"by_fold": {"0": "released/hsnet_fold0.pt", "1": "released/hsnet_fold1.pt"}}
    # a trained decoder (no checkpoint) beside the released ones: two rows, told apart
    trained = [make_run(fold=f, miou=50.0 + f) for f in range(2)]
    both = compute_cells(runs + trained, n_boot=50)
    assert len(set(both.row)) == 2
    assert set(both.label) == {"hsnet [checkpoint=per fold]", "hsnet [checkpoint=None]"}
    # two checkpoint sets at the same fold are rows of their own, told apart by their checkpoint
    runs.append(make_run(fold=0, miou=40.0, config={"checkpoint": "ours/fold0.pt"}))
    labels = set(compute_cells(runs, n_boot=50).label)
    assert len(labels) == 3 and any("checkpoint=ours/fold0.pt" in lab for lab in labels)


def test_profiles_never_mix_in_the_report(app, tmp_path):
    write_grid(tmp_path / "res", {"hsnet": 60.0}, folds=range(2))
    write_grid(tmp_path / "res", {"hsnet": 50.0}, folds=range(2), profile="full")
    r = invoke(app, "report", tmp_path / "res", "--out", tmp_path / "rep", "--no-figures", *FAST)
    assert r.exit_code == 0, r.output
    md = (tmp_path / "rep" / "table_pascal_hsnet.md").read_text()
    quick = next(line for line in md.splitlines() if line.startswith("| hsnet [profile=quick]"))
    full = next(line for line in md.splitlines() if line.startswith("| hsnet [profile=full]"))
    assert "| **60.0** ±" in quick and "| 50.0 ±" in full and "n=" not in quick + full


def test_legacy_result_files_still_report(app, tmp_path):
    """Older files: one ``seed``, no ``seeds``/``query``/``fold_classes``; seeds still average."""
    for s in (0, 1):
        write_grid(tmp_path / "res", {"hsnet": 60.0 + s}, folds=range(2), seeds=(s,), legacy=True)
    r = invoke(app, "report", tmp_path / "res", "--out", tmp_path / "rep", "--no-figures", *FAST)
    assert r.exit_code == 0, r.output
    md = (tmp_path / "rep" / "table_pascal_hsnet.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| hsnet"))
    assert "60.5 ±" in row and "(sd 0.7, n=2)" in row


# --------------------------------------------------------------------------------------------
# regress


def test_baseline_cells_are_keyed_by_the_identity(tmp_path):
    write_grid(tmp_path / "res", {"hsnet": 60.0}, folds=range(1))
    base = tmp_path / "b.json"
    run_regress(tmp_path / "res", base, update=True, n_boot=50)
    doc = load_baseline(base)
    # the same cells under another profile are other cells: the baseline's are missing, these are new
    write_grid(tmp_path / "res2", {"hsnet": 60.0}, folds=range(1), profile="full")
    _, current = current_cells(tmp_path / "res2", n_boot=50)
    comp = compare(doc, current)
    assert {c.status for c in comp.checks} == {"missing"} and len(comp.new_cells) == 2
    assert all("profile" in json.loads(k[0]) for k in comp.new_cells)
    assert cell_key(doc["cells"][0]) != comp.new_cells[0]


def test_regress_tells_apart_rows_by_label(app, tmp_path):
    write_grid(tmp_path / "res", {"hsnet": 60.0}, folds=range(1))
    base = tmp_path / "b.json"
    assert invoke(app, "regress", tmp_path / "res", "--baseline", base, "--update", "--n-boot", "50").exit_code == 0
    write_run(tmp_path / "res", method="hsnet", fold=0, miou=50.0, config={"episodes": 1000})
    r = invoke(app, "regress", tmp_path / "res", "--baseline", base, "--n-boot", "50")
    assert r.exit_code == 0, r.output
    assert "new: hsnet [episodes=1000] resnet50 mask pascal/hsnet 1-shot fold0" in r.output


def test_format_1_baseline_must_be_rewritten_and_keeps_its_tolerances(app, tmp_path):
    write_grid(tmp_path / "res", {"hsnet": 60.0}, folds=range(1))
    old = {"format": "fssbench.baseline/1", "suite": "demo", "tolerance": 2.0, "cells": [
        {"dataset": "pascal", "protocol": "hsnet", "method": "hsnet", "options": {}, "train_backbone": "resnet50",
         "eval_backbone": "resnet50", "kind": "mask", "shot": 1, "fold": 0, "miou": 60.0, "tolerance": 0.25}]}
    base = tmp_path / "b.json"
    base.write_text(json.dumps(old))
    r = invoke(app, "regress", tmp_path / "res", "--baseline", base, "--n-boot", "50")
    assert isinstance(r.exception, UserError) and "fssbench.baseline/1" in str(r.exception) and "--update" in str(r.exception)
    r = invoke(app, "regress", tmp_path / "res", "--baseline", base, "--update", "--n-boot", "50")
    assert r.exit_code == 0, r.output
    new = load_baseline(base)
    assert new["format"] == "fssbench.baseline/2" and new["tolerance"] == 2.0
    fold0 = next(c for c in new["cells"] if c["fold"] == 0)
    assert fold0["tolerance"] == 0.25 and fold0["config"]["profile"] == "quick"
