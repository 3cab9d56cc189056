"""Each DiffUp paper suite's quick profile, end to end with a tiny budget (few episodes, one short
epoch, the small synthetic world) through `fssbench report`: every table and figure the suite is
for comes out. The full quick profiles are not run in CI (time); the README gives their numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fssbench.cli import main

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    from fssbench.synth import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, seed=0, size="small", force=True, show_progress=False)
    return root


@pytest.fixture(scope="module")
def default_root(tmp_path_factory) -> Path:
    """The default-size world: the small one has too few images per class for 10-shot episodes."""
    from fssbench.synth import generate

    root = tmp_path_factory.mktemp("synth_default")
    generate(root, seed=0, size="default", force=True, show_progress=False)
    return root


def tiny(suite: str, tmp: Path, synth: Path, folds: list[int] | None = None) -> Path:
    """The suite file with its quick profile cut to a tiny budget (same matrix, same methods)."""
    doc = yaml.safe_load((ROOT / "suites" / f"{suite}.yaml").read_text())
    q = doc["profiles"]["quick"]
    q["dataset"] = {"name": "pascal", "root": str(synth)}
    q["episodes"] = 6
    q["train"] = {**q.get("train", {}), "epochs": 1, "episodes_per_epoch": 4, "batch_size": 4, "val_episodes": 4}
    for m in q["matrix"]["methods"]:
        if isinstance(m, dict) and "train" in m:
            m["train"] = {**m["train"], "epochs": 1}
    if folds is not None:
        q["matrix"]["folds"] = folds
    q["eval"] = {**q.get("eval", {}), "batch_size": 4, "n_boot": 50}
    path = tmp / f"{suite}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_and_report(path: Path, tmp: Path) -> Path:
    res, rep = tmp / "res", tmp / "rep"
    main(["run", str(path), "--results-dir", str(res), "--workers", "1"])
    main(["report", str(res), "--out", str(rep)])
    return rep


def test_annotation_types_quick(tmp_path, synth_root):
    rep = run_and_report(tiny("annotation_types", tmp_path, synth_root), tmp_path)
    table = (rep / "table_pascal_hsnet.md").read_text()
    for kind in ("mask", "bbox", "scribble", "image", "text"):
        assert f"| {kind} |" in table, kind
    names = {p.name for p in rep.iterdir()}
    assert any(n.startswith("fig_trajectory_") and n.endswith(".png") for n in names)
    assert any(n.startswith("fig_error_maps_") and n.endswith(".pdf") for n in names)
    assert {"fig_qualitative_pascal_hsnet_bbox_1shot_f0_zoo-clip-rn.png", "fig_qualitative_pascal_hsnet_text_0shot_f0_zoo-clip-rn.png"} <= names
    index = (rep / "index.md").read_text()
    assert all(n in index for n in names if n.startswith("fig_"))  # every figure linked from the index


def test_kshot_quick_sweeps_steps_and_ensemble_from_one_decoder(tmp_path, default_root):
    path = tiny("kshot", tmp_path, default_root, folds=[0])
    from fssbench.suite import load_suite

    runs = [r for r in load_suite(path).expand() if r.config.method == "diffup"]
    assert len({r.decoder_id for r in runs}) == 1  # steps, ensemble and k never re-train
    assert {(r.config.kind, r.config.shot) for r in runs} == {("text", 0), ("mask", 1), ("mask", 2), ("mask", 5), ("mask", 10)}
    rep = run_and_report(path, tmp_path)
    assert (rep / "fig_sensitivity.png").is_file() and (rep / "fig_kshot_pascal_hsnet.png").is_file()
    import pandas as pd

    from fssbench.report.panels import sensitivity_frame

    sens = sensitivity_frame(pd.read_csv(rep / "cells.csv", keep_default_na=False, na_values=[""]))
    assert set(sens["option"]) == {"sampling_steps", "ensemble"}
    assert sorted(set(sens[sens["option"] == "sampling_steps"]["value"])) == [1, 2, 5, 10, 25, 50]


def test_transform_fn_quick(tmp_path, synth_root):
    rep = run_and_report(tiny("transform_fn", tmp_path, synth_root), tmp_path)
    table = (rep / "table_pascal_hsnet.md").read_text()
    assert "l2:exp" in table and "l1:inv" in table and "± " not in table.split("\n")[0]
    assert (rep / "paired.md").is_file()


def test_ablation_quick_and_lfe_is_never_stitched(tmp_path, synth_root):
    path = tiny("ablation", tmp_path, synth_root)
    rep = run_and_report(path, tmp_path)
    rows = (rep / "table_pascal_hsnet.md").read_text()
    for opt in ("quality=no_err", "quality=no_iou", "quality=none", "affinity=False", "process=ddpm", "lfe=True", "query_info=[]"):
        assert opt in rows, opt
    assert "Δ mIoU" in (rep / "paired.md").read_text()
    # asking to stitch the LFE variant is refused before any work
    doc = yaml.safe_load(path.read_text())
    doc["profiles"]["quick"]["matrix"]["backbones"] = [{"train": "zoo-rn-s", "eval": ["zoo-rn-s", "zoo-rn-m"]}]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(SystemExit) as ex:
        main(["run", str(bad), "--results-dir", str(tmp_path / "bad")])
    assert ex.value.code != 0 and not (tmp_path / "bad").exists()
