"""``fssbench regress``: exit codes, tolerances, missing cells, ``--update`` round trip, bad inputs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fixtures_results import fold_miou, write_grid, write_run, invoke, report_app  # noqa: E402

from fssbench.errors import UserError  # noqa: E402
from fssbench.metrics import bootstrap_ci  # noqa: E402
from fssbench.regress import BASELINE_FORMAT, cell_key, compare, load_baseline, tolerance_for  # noqa: E402
from fssbench.report import load_runs  # noqa: E402

FAST = ["--n-boot", "100"]


@pytest.fixture(scope="module")
def app():
    return report_app()


@pytest.fixture
def suite(app, tmp_path):
    """Results (hsnet 60+2f, ours 62+2f; FB-IoU = mIoU + 10) and a fresh baseline from them."""
    res = tmp_path / "results" / "demo"
    write_grid(res, {"hsnet": 60.0, "ours": 62.0}, ci_half=1.0)
    base = tmp_path / "results" / "baselines" / "demo.json"
    r = invoke(app, "regress", res, "--baseline", base, "--update", *FAST)
    assert r.exit_code == 0, (r.output, r.exception)
    return res, base


def status(res) -> int:
    """The process exit status ``fssbench.cli.main`` gives: a UserError's own code, else click's."""
    return res.exception.exit_code if isinstance(res.exception, UserError) else res.exit_code


def lower(res: Path, method: str, fold: int, by: float, base: float) -> None:
    """Overwrite one run with mIoU (and FB-IoU) ``by`` points lower."""
    write_run(res, method=method, fold=fold, miou=fold_miou(base, fold) - by, ci_half=1.0)


def test_update_writes_versioned_baseline(suite):
    res, base = suite
    doc = json.loads(base.read_text())
    assert doc["format"] == BASELINE_FORMAT == "fssbench.baseline/2"
    assert doc["suite"] == "demo" and doc["tolerance"] == 1.0
    assert len(doc["cells"]) == 10  # 2 methods x (4 folds + mean)
    c = next(c for c in doc["cells"] if c["method"] == "ours" and c["fold"] == 2)
    assert c["miou"] == pytest.approx(66.0) and c["fbiou"] == pytest.approx(76.0)
    run = next(r for r in load_runs(res) if r.config["method"] == "ours" and r.config["fold"] == 2)
    ci = bootstrap_ci(run.records, n_boot=100, seed=0, class_ids=run.metrics["fold_classes"])
    assert c["miou_ci"] == pytest.approx(list(ci), abs=1e-4)  # recomputed from the records, not the stored ±1
    assert c["options"] == {} and c["train_backbone"] == c["eval_backbone"] == "resnet50" and c["kind"] == "mask"
    assert c["shot"] == 1 and c["episode_hash"] and c["label"] == "ours" and c["n_runs"] == 1
    # the rest of the identity is readable in "config"; seeds and bookkeeping keys are not in it
    assert c["config"]["profile"] == "quick" and c["config"]["supports"] == "own" and c["config"]["episodes"] == 40
    assert not {"seeds", "seed", "label", "method_rank", "decoder_id", "suite_file", "fold", "shot"} & set(c["config"])
    mean = next(c for c in doc["cells"] if c["method"] == "hsnet" and c["fold"] == "mean")
    assert mean["miou"] == pytest.approx(63.0) and mean["folds"] == [0, 1, 2, 3]
    assert not [p for p in base.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_unchanged_results_pass(app, suite):
    res, base = suite
    r = invoke(app, "regress", res, "--baseline", base, *FAST)
    assert r.exit_code == 0, r.output
    assert "ok" in r.output and "0 regressed" in r.output


def test_drop_beyond_tolerance_fails_naming_the_cell(app, suite):
    res, base = suite
    lower(res, "ours", 2, by=2.0, base=62.0)
    r = invoke(app, "regress", res, "--baseline", base, *FAST)
    assert r.exit_code == 1 and status(r) == 1
    assert "regression gate failed" in str(r.exception) and "\n" not in str(r.exception)
    out = r.output
    assert "REGRESSED: ours resnet50 mask pascal/hsnet 1-shot fold2 mIoU dropped 2.00 (66.00 -> 64.00)" in out
    assert "REGRESSED: ours resnet50 mask pascal/hsnet 1-shot fold2 FB-IoU dropped 2.00" in out
    # the fold mean moved by 0.5: within tolerance, not named as a failure
    assert "1-shot mean mIoU dropped" not in out
    assert "hsnet resnet50 mask pascal/hsnet 1-shot fold2 mIoU dropped" not in out


def test_drop_within_tolerance_passes(app, suite):
    res, base = suite
    lower(res, "ours", 2, by=0.5, base=62.0)
    r = invoke(app, "regress", res, "--baseline", base, *FAST)
    assert r.exit_code == 0, r.output
    assert "-0.50" in r.output


def test_cli_tolerance(app, suite):
    res, base = suite
    lower(res, "hsnet", 0, by=2.0, base=60.0)
    assert invoke(app, "regress", res, "--baseline", base, "--tolerance", "2.5", *FAST).exit_code == 0
    assert invoke(app, "regress", res, "--baseline", base, "--tolerance", "1.5", *FAST).exit_code == 1


def test_improvement_is_reported_never_fails(app, suite):
    res, base = suite
    lower(res, "ours", 1, by=-3.0, base=62.0)
    r = invoke(app, "regress", res, "--baseline", base, *FAST)
    assert r.exit_code == 0
    assert "improved" in r.output and "+3.00" in r.output


def test_missing_cell_fails(app, suite):
    res, base = suite
    victim = next(p for p in res.glob("hsnet-*-f3-*.json"))
    victim.unlink()
    r = invoke(app, "regress", res, "--baseline", base, *FAST)
    assert status(r) == 1
    assert "1 baseline cell(s) missing" not in str(r.exception)  # fold3 and the mean: 2 cells
    assert "2 baseline cell(s) missing" in str(r.exception)
    assert "MISSING: hsnet resnet50 mask pascal/hsnet 1-shot fold3 mIoU: in the baseline" in r.output
    # without fold 3 the hsnet fold mean is gone too
    assert "MISSING: hsnet resnet50 mask pascal/hsnet 1-shot mean mIoU" in r.output


def test_new_cells_do_not_fail(app, suite):
    res, base = suite
    write_run(res, method="extra", fold=0, miou=30.0)
    r = invoke(app, "regress", res, "--baseline", base, *FAST)
    assert r.exit_code == 0
    assert "new: extra resnet50 mask pascal/hsnet 1-shot fold0" in r.output


def test_per_metric_and_per_cell_tolerances(app, suite):
    res, base = suite
    doc = json.loads(base.read_text())
    doc["tolerance"] = {"default": 1.0, "miou": 3.0}
    base.write_text(json.dumps(doc))
    lower(res, "ours", 2, by=2.0, base=62.0)
    r = invoke(app, "regress", res, "--baseline", base, *FAST)
    assert r.exit_code == 1  # mIoU within 3.0, FB-IoU beyond the default 1.0
    assert "fold2 FB-IoU dropped" in r.output and "fold2 mIoU dropped" not in r.output
    # --tolerance replaces the default but not the file's per-metric value
    assert invoke(app, "regress", res, "--baseline", base, "--tolerance", "2.5", *FAST).exit_code == 0
    # a per-cell tolerance wins over everything
    for c in doc["cells"]:
        if c["method"] == "ours" and c["fold"] == 2:
            c["tolerance"] = {"miou": 0.5, "fbiou": 5}
    base.write_text(json.dumps(doc))
    r = invoke(app, "regress", res, "--baseline", base, "--tolerance", "2.5", *FAST)
    assert r.exit_code == 1 and "fold2 mIoU dropped" in r.output and "fold2 FB-IoU dropped" not in r.output


def test_update_round_trip_keeps_tolerances(app, suite):
    res, base = suite
    doc = json.loads(base.read_text())
    doc["tolerance"] = {"default": 1.0, "fbiou": 2.0}
    doc["cells"][0]["tolerance"] = 0.25
    key0 = cell_key(doc["cells"][0])
    base.write_text(json.dumps(doc))
    lower(res, "ours", 2, by=2.0, base=62.0)
    assert invoke(app, "regress", res, "--baseline", base, *FAST).exit_code == 1
    r = invoke(app, "regress", res, "--baseline", base, "--update", "--tolerance", "0.5", *FAST)
    assert r.exit_code == 0 and "wrote baseline" in r.output
    new = load_baseline(base)
    assert new["tolerance"] == {"default": 0.5, "fbiou": 2.0}
    assert next(c for c in new["cells"] if cell_key(c) == key0)["tolerance"] == 0.25
    assert next(c for c in new["cells"] if c["method"] == "ours" and c["fold"] == 2)["miou"] == pytest.approx(64.0)
    assert invoke(app, "regress", res, "--baseline", base, *FAST).exit_code == 0


def test_ci_column_is_informative(suite):
    res, base = suite
    doc = load_baseline(base)
    cur = {cell_key(c): dict(c) for c in doc["cells"]}
    k = cell_key(doc["cells"][0])
    cur[k]["miou"] = doc["cells"][0]["miou"] - 5.0  # CIs are ±1: the drop's CI excludes 0
    comp = compare(doc, cur)
    chk = next(c for c in comp.checks if c.key == k and c.metric == "miou")
    assert chk.status == "regressed" and chk.ci_excludes_zero is True
    ok = next(c for c in comp.checks if c.key != k and c.metric == "miou")
    assert ok.status == "ok" and ok.ci_excludes_zero is False


def test_tolerance_precedence_unit():
    doc = {"tolerance": {"default": 1.0, "miou": 2.0}}
    assert tolerance_for(doc, {}, "miou", 0.3) == 2.0
    assert tolerance_for(doc, {}, "fbiou", 0.3) == 0.3
    assert tolerance_for(doc, {}, "fbiou", None) == 1.0
    assert tolerance_for(doc, {"tolerance": 0.1}, "miou", 5.0) == 0.1
    assert tolerance_for({}, {}, "miou", None) == 1.0
    assert tolerance_for({"tolerance": 0.7}, {}, "miou", None) == 0.7


# --------------------------------------------------------------------------------------------
# bad inputs


def _user_error(res) -> str:
    assert res.exit_code != 0 and status(res) == 2
    assert isinstance(res.exception, UserError), repr(res.exception)
    msg = str(res.exception)
    assert msg and "\n" not in msg
    return msg


def test_missing_baseline(app, tmp_path):
    write_run(tmp_path / "res", miou=60.0)
    msg = _user_error(invoke(app, "regress", tmp_path / "res", "--baseline", tmp_path / "none.json"))
    assert "does not exist" in msg and "--update" in msg


@pytest.mark.parametrize(
    "content, why",
    [
        ("{oops", "not JSON"),
        (json.dumps({"format": "other", "cells": []}), "format"),
        (json.dumps({"format": BASELINE_FORMAT, "cells": {}}), "cells"),
        (json.dumps({"format": BASELINE_FORMAT, "cells": [{"method": "a"}]}), "lacks"),
        (json.dumps({"format": BASELINE_FORMAT, "cells": [{"method": "a", "train_backbone": "r", "shot": 1, "fold": 0}]}),
         "neither"),
        (json.dumps({"format": BASELINE_FORMAT, "tolerance": -1, "cells": []}), "tolerance"),
        (json.dumps({"format": BASELINE_FORMAT, "cells": [
            {"method": "a", "train_backbone": "r", "shot": 1, "fold": 0, "miou": "high"}]}), "not a number"),
    ],
)
def test_invalid_baseline(app, tmp_path, content, why):
    write_run(tmp_path / "res", miou=60.0)
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    msg = _user_error(invoke(app, "regress", tmp_path / "res", "--baseline", bad))
    assert "invalid" in msg and why in msg
    # --update refuses to overwrite a file it cannot read (it may hold hand-set tolerances)
    _user_error(invoke(app, "regress", tmp_path / "res", "--baseline", bad, "--update"))
    assert bad.read_text() == content


def test_missing_and_empty_results(app, tmp_path):
    msg = _user_error(invoke(app, "regress", tmp_path / "nope", "--baseline", tmp_path / "b.json", "--update"))
    assert "does not exist" in msg
    (tmp_path / "empty").mkdir()
    msg = _user_error(invoke(app, "regress", tmp_path / "empty", "--baseline", tmp_path / "b.json", "--update"))
    assert "no run files" in msg
    assert not (tmp_path / "b.json").exists()


def test_negative_tolerance(app, suite):
    res, base = suite
    assert "tolerance" in _user_error(invoke(app, "regress", res, "--baseline", base, "--tolerance", "-1"))


def test_table_prints_each_cell_once_and_fits_a_log(suite):
    """The cell's identity is on its first metric row only, the shared dataset/protocol in the title,
    and at the log width (132 columns) no row wraps."""
    from rich.console import Console

    from fssbench.regress import comparison_table

    res, base = suite
    doc = load_baseline(base)
    comp = compare(doc, {cell_key(c): dict(c) for c in doc["cells"]})
    con = Console(width=132, record=True, file=open(os.devnull, "w"))
    con.print(comparison_table(comp, "demo"))
    lines = con.export_text().splitlines()
    rows = [line for line in lines if line.startswith("│")]
    assert len(rows) == len(comp.checks)  # one line per check: nothing wrapped
    assert "fssbench regress: demo (" in lines[0]
    firsts = [r for r in rows if r.split("│")[1].strip()]
    assert len(firsts) == len(doc["cells"])  # mIoU and FB-IoU rows share one identity
