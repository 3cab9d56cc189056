"""Richer predictions in the report (query and extras columns, mask-output tables) and the
support-reliance control (other-class supports kept out of the main tables, paired against own)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fixtures_results import make_run, write_grid, invoke, report_app  # noqa: E402

from fssbench.report import NOT_USED, episodes_frame, runs_frame, support_reliance  # noqa: E402

FAST = ["--n-boot", "100", "--n-perm", "200"]


@pytest.fixture(scope="module")
def app():
    return report_app()


def test_episodes_frame_has_query_and_extras_columns():
    with_prior = make_run(method="hm", queries=4, outputs={"prior": 40.0})
    plain = make_run(method="hsnet", queries=4)
    df = episodes_frame([with_prior, plain])
    assert list(df.columns[df.columns.get_loc("episode_id"):df.columns.get_loc("episode_id") + 2]) == ["episode_id", "query"]
    assert df.loc[0, "query"] == with_prior.records[0].query == "img_c1_0"
    for k in ("prior.inter_fg", "prior.union_fg", "prior.inter_bg", "prior.union_bg"):
        assert k in df.columns
    hm, hs = df[df.method == "hm"], df[df.method == "hsnet"]
    assert hm["prior.inter_fg"].tolist() == [r.extras["prior.inter_fg"] for r in with_prior.records]
    assert hs["prior.inter_fg"].isna().all()  # a run without extras: NaN


def test_runs_frame_flattens_output_metrics():
    df = runs_frame([make_run(method="hm", outputs={"prior": 40.0}, ci_half=1.0), make_run()])
    assert df.loc[0, "metrics.outputs.prior.miou"] == pytest.approx(40.0)
    assert df.loc[0, "metrics.outputs.prior.fbiou"] == pytest.approx(50.0)
    assert df.loc[0, "metrics.outputs.prior.miou_ci_lo"] == pytest.approx(39.0)  # intervals as _lo/_hi columns
    assert df.loc[0, "metrics.outputs.prior.miou_ci_hi"] == pytest.approx(41.0)
    assert math.isnan(df.loc[1, "metrics.outputs.prior.miou"])
    assert df.loc[0, "metrics.fold_classes"] == "[1, 2, 3, 4, 5]"
    assert list(df.n_queries.isna()) == [True, True]  # no query names recorded
    assert runs_frame([make_run(queries=4)]).loc[0, "n_queries"] == 20


def test_mask_outputs_get_their_own_table(app, tmp_path):
    write_grid(tmp_path / "res", {"hm": 60.0}, folds=range(2), queries=4, outputs={"prior": 40.0})
    write_grid(tmp_path / "res", {"hsnet": 55.0}, folds=range(2), queries=4)
    r = invoke(app, "report", tmp_path / "res", "--out", tmp_path / "rep", "--no-figures", *FAST)
    assert r.exit_code == 0, r.output
    md = (tmp_path / "rep" / "outputs.md").read_text()
    assert "pascal (hsnet protocol), output prior" in md
    row = next(line for line in md.splitlines() if line.startswith("| hm"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3].startswith("40.0 ±") and cells[4].startswith("40.0 ±") and cells[5].startswith("40.0 ±")
    assert "| hsnet" not in md  # no prior output
    csv = pd.read_csv(tmp_path / "rep" / "outputs.csv")
    assert set(csv.output) == {"prior"} and set(csv.ci_method) == {"bootstrap"}
    main = (tmp_path / "rep" / "table_pascal_hsnet.md").read_text()
    assert "| hm | resnet50 | mask | **60.0**" in main
    assert "`outputs.md`" in (tmp_path / "rep" / "index.md").read_text()


def test_no_outputs_no_outputs_file(app, tmp_path):
    write_grid(tmp_path / "res", {"hsnet": 55.0}, folds=range(1))
    assert invoke(app, "report", tmp_path / "res", "--out", tmp_path / "rep", "--no-figures", *FAST).exit_code == 0
    assert not (tmp_path / "rep" / "outputs.md").exists() and not (tmp_path / "rep" / "support_reliance.md").exists()


# --------------------------------------------------------------------------------------------
# support reliance


@pytest.fixture
def reliance_results(tmp_path):
    """hsnet drops 10 points with other-class supports; prototype does not move (a different
    spread keeps the episodes different, the class sums equal)."""
    res = tmp_path / "res"
    write_grid(res, {"hsnet": 60.0, "prototype": 50.0}, folds=range(2), queries=4)
    write_grid(res, {"hsnet": 50.0}, folds=range(2), queries=4, supports="other-class")
    write_grid(res, {"prototype": 50.0}, folds=range(2), queries=4, supports="other-class", spread=5.0)
    return res


def test_support_reliance_table_and_flag(app, reliance_results, tmp_path):
    r = invoke(app, "report", reliance_results, "--out", tmp_path / "rep", "--no-figures", *FAST)
    assert r.exit_code == 0, r.output
    out = tmp_path / "rep"
    df = pd.read_csv(out / "support_reliance.csv")
    hs = df[(df.method == "hsnet") & (df.fold == "mean")].iloc[0]
    assert hs.miou_own == pytest.approx(61.0) and hs.miou_other == pytest.approx(51.0)
    assert hs.delta_miou == pytest.approx(10.0) and hs.ci_lo > 0 and bool(hs.uses_support) and hs.n_queries == 40
    proto = df[df.method == "prototype"]
    assert len(proto) == 3  # fold0, fold1, mean
    assert proto.delta_miou.abs().max() < 1e-9 and (proto.ci_lo < 0).all() and (proto.ci_hi > 0).all()
    assert not proto.uses_support.any() and set(proto.verdict) == {NOT_USED}
    md = (out / "support_reliance.md").read_text()
    proto_line = next(line for line in md.splitlines() if line.startswith("| prototype") and "| mean |" in line)
    assert f"**{NOT_USED}**" in proto_line
    assert NOT_USED not in next(line for line in md.splitlines() if line.startswith("| hsnet") and "| mean |" in line)
    # controls stay out of the main table and the paired comparisons
    main = (out / "table_pascal_hsnet.md").read_text()
    assert "other-class" not in main and "| hsnet | resnet50 | mask | **60.0**" in main
    paired = pd.read_csv(out / "paired.csv")
    assert len(paired) == 2 and paired.delta_miou.tolist() == pytest.approx([-10.0, -10.0])
    cells = pd.read_csv(out / "cells.csv")
    assert (cells[cells.fold != "mean"].n_runs == 1).all()  # a control never joins its own-support cell
    # the console summary mentions it
    assert "support reliance" in r.output and "prototype resnet50 mask 1-shot mean: Δ +0.00" in r.output
    assert NOT_USED in r.output and "support_reliance.md" in r.output
    assert "support-reliance controls, kept out of the tables" in (out / "index.md").read_text()


def test_support_reliance_pairs_only_identical_configurations(reliance_results):
    from fssbench.report import load_runs

    runs = load_runs(reliance_results)
    runs.append(make_run(method="hsnet", fold=0, miou=50.0, supports="other-class", profile="full", queries=4))
    df, unmatched = support_reliance(runs, n_boot=50, n_perm=50)
    assert len(unmatched) == 1 and "full" in unmatched[0]  # no own-support run of profile "full"
    assert set(df.n_runs) == {1, 2}


def test_parameter_table_says_whether_the_count_depends_on_the_backbone():
    from fssbench.report.parameters import parameters_markdown

    runs = []
    for method, counts in (("diffup", {"zoo-rn-s": 182491, "zoo-vit": 182491}), ("hsnet", {"zoo-rn-s": 2000, "zoo-vit": 3000})):
        for bb, n in counts.items():
            r = make_run(method=method, train_backbone=bb, eval_backbone="zoo-rn-m", records=False)
            r.provenance = dict(r.provenance, trainable_parameters=n)
            runs.append(r)
    missing = make_run(method="prototype", train_backbone="zoo-rn-s", records=False)  # no count recorded: no row
    md = parameters_markdown([*runs, missing])
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("| ") and "---" not in line}
    assert rows["diffup"][1:] == ["182,491", "182,491", "yes"]
    assert rows["hsnet"][1:] == ["2,000", "3,000", "no"]
    assert "prototype" not in rows
    assert parameters_markdown([missing]) == ""


def test_prediction_minus_output_is_paired_per_run():
    from fssbench.report.outputs import output_deltas, output_deltas_markdown

    runs = [make_run(method="hm", queries=4, miou=60.0, outputs={"prior": 40.0}), make_run(method="hsnet", queries=4)]
    df = output_deltas(runs, n_boot=100, n_perm=200)
    assert len(df) == 1  # the run without a mask output has no row
    row = df.iloc[0]
    assert (row.method, row.output) == ("hm", "prior")
    assert row.prediction == pytest.approx(60.0) and row.output_miou == pytest.approx(40.0) and row.delta == pytest.approx(20.0)
    assert row.ci_lo <= 20.0 <= row.ci_hi and 0 <= row.p <= 1
    assert "| hm | resnet50 | mask | 1 | 0 | prior | 60.0 | 40.0 | +20.0" in output_deltas_markdown(df)
    assert output_deltas_markdown(output_deltas(runs[1:])) == ""
