"""``fssbench report``: tables (md/tex/csv), data CSVs, figures, paired comparisons, bad inputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fixtures_results import make_run, write_grid, write_run, invoke, report_app  # noqa: E402

from fssbench.errors import UserError  # noqa: E402
from fssbench.metrics import bootstrap_ci  # noqa: E402
from fssbench.report import compute_cells, load_suite, method_label, paired_comparisons  # noqa: E402

FAST = ["--n-boot", "100", "--n-perm", "200"]


def run_ci(res_dir: Path, method: str, fold: int, shot: int = 1, metric: str = "miou") -> tuple[float, float]:
    """The interval the report must show for one run: the run's own cluster bootstrap (100 draws, seed 0)."""
    run = next(r for r in load_suite(res_dir).runs
               if r.config["method"] == method and r.config["fold"] == fold and r.config["shot"] == shot)
    return bootstrap_ci(run.records, n_boot=100, seed=0, metric=metric, class_ids=run.metrics["fold_classes"])


def pm(res_dir: Path, method: str, fold: int, value: float, shot: int = 1) -> str:
    lo, hi = run_ci(res_dir, method, fold, shot)
    return f"{value:.1f} ±{(hi - lo) / 2:.1f}"


@pytest.fixture(scope="module")
def app():
    return report_app()


def _ok(res) -> None:
    assert res.exit_code == 0, (res.output, res.exception)


# --------------------------------------------------------------------------------------------
# tables


@pytest.fixture(scope="module")
def two_shot_report(app, tmp_path_factory):
    """hsnet: fold f -> 60 + 2f (1-shot), +5 for 5-shot; ours: 62 + 2f. CI ±1.0 stored."""
    root = tmp_path_factory.mktemp("two_shot")
    res_dir, out = root / "results" / "demo", root / "reports"
    write_grid(res_dir, {"hsnet": 60.0, "ours": 62.0}, shots=(1, 5), ci_half=1.0)
    r = invoke(app, "report", res_dir, "--out", out, *FAST)
    _ok(r)
    return res_dir, out, r


def test_markdown_table_layout_and_values(two_shot_report):
    res_dir, out, _ = two_shot_report
    md = (out / "table_pascal_hsnet.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Method"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols[:3] == ["Method", "Backbone", "Kind"]
    assert cols[3:10] == ["1-shot fold0", "1-shot fold1", "1-shot fold2", "1-shot fold3", "1-shot mean", "1-shot FB-IoU", "5-shot fold0"]
    assert cols[-2:] == ["5-shot mean", "5-shot FB-IoU"]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in md.splitlines() if line.startswith("| hsnet") or line.startswith("| ours")}
    hs, ours = rows["hsnet"], rows["ours"]
    # single runs: value and the half-width of the run's bootstrap from its records (not the stored ±1.0)
    assert hs[3:7] == [pm(res_dir, "hsnet", f, 60.0 + 2 * f) for f in range(4)]
    assert "±1.0" not in hs[3]
    assert hs[7].startswith("63.0 ±")  # mean of fold mIoUs (60+62+64+66)/4
    assert hs[8].startswith("73.0 ±")  # FB-IoU, mean over folds
    assert hs[9].startswith("65.0 ±") and hs[13].startswith("68.0 ±")  # 5-shot fold0, mean
    # best per column in bold
    assert ours[3] == "**" + pm(res_dir, "ours", 0, 62.0).replace(" ", "** ", 1) and ours[7].startswith("**65.0**")
    assert ours[14].startswith("**80.0**")
    assert "**" not in "".join(hs)


def test_csv_table_has_bounds_in_separate_columns(two_shot_report):
    res_dir, out, _ = two_shot_report
    df = pd.read_csv(out / "table_pascal_hsnet.csv").set_index("method")
    lo, hi = run_ci(res_dir, "hsnet", 0)
    assert df.loc["hsnet", "1shot_fold0_miou"] == pytest.approx(60.0)
    assert df.loc["hsnet", "1shot_fold0_miou_lo"] == pytest.approx(lo, abs=1e-4)
    assert df.loc["hsnet", "1shot_fold0_miou_hi"] == pytest.approx(hi, abs=1e-4)
    assert df.loc["ours", "5shot_mean_miou"] == pytest.approx(70.0)
    assert df.loc["ours", "5shot_fbiou"] == pytest.approx(80.0)
    lo, hi = df.loc["hsnet", "1shot_mean_miou_lo"], df.loc["hsnet", "1shot_mean_miou_hi"]
    assert lo < 63.0 < hi
    assert not any(c.endswith("_sd") for c in df.columns)  # single seed: no seed columns


def test_fold_mean_interval_recomputed_from_records(two_shot_report):
    res_dir, _, _ = two_shot_report
    cells = compute_cells(load_suite(res_dir).runs, n_boot=300)
    mean = cells[(cells.method == "hsnet") & (cells.shot == 1) & (cells.fold == "mean") & (cells.metric == "miou")].iloc[0]
    fold0 = cells[(cells.method == "hsnet") & (cells.shot == 1) & (cells.fold == 0) & (cells.metric == "miou")].iloc[0]
    assert mean.ci_method == "bootstrap" and fold0.ci_method == "bootstrap"  # both from the records
    assert mean.value == pytest.approx(63.0)
    assert mean.ci_lo < 63.0 < mean.ci_hi
    # averaging 4 independent folds narrows the interval against a single fold's bootstrap
    single = compute_cells([r for r in load_suite(res_dir).runs if r.config["method"] == "hsnet" and r.config["shot"] == 1
                            and r.config["fold"] == 0], n_boot=300)
    one = single[(single.fold == "mean") & (single.metric == "miou")].iloc[0]
    assert (mean.ci_hi - mean.ci_lo) < (one.ci_hi - one.ci_lo)


def test_latex_table_booktabs_and_bold(two_shot_report):
    res_dir, out, _ = two_shot_report
    tex = (out / "table_pascal_hsnet.tex").read_text()
    for token in ("\\toprule", "\\midrule", "\\bottomrule", "\\multicolumn{6}{c}{1-shot}", "\\multicolumn{6}{c}{5-shot}",
                  "\\cmidrule(lr){4-9}", "\\cmidrule(lr){10-15}", "\\begin{tabular}{lll" + "r" * 12 + "}"):
        assert token in tex
    ours = next(line for line in tex.splitlines() if line.startswith("ours"))
    hs = next(line for line in tex.splitlines() if line.startswith("hsnet"))
    assert ours.count("\\textbf{") == 12 and "\\textbf" not in hs
    lo, hi = run_ci(res_dir, "hsnet", 0)
    assert f"60.0\\,{{\\scriptsize $\\pm${(hi - lo) / 2:.1f}}}" in hs
    assert ours.rstrip().endswith("\\\\")


def test_runs_and_episodes_csv(two_shot_report):
    _, out, _ = two_shot_report
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 16  # 2 methods x 2 shots x 4 folds
    for col in ("run_id", "episode_hash", "config.method", "config.fold", "config.shot", "config.method_options",
                "miou", "fbiou", "miou_ci_lo", "miou_ci_hi", "n_episodes", "provenance.git.commit"):
        assert col in runs.columns
    assert runs["run_id"].is_unique
    eps = pd.read_csv(out / "episodes.csv")
    assert len(eps) == 16 * 40
    assert {"run_id", "episode_id", "class_id", "inter_fg", "union_fg", "inter_bg", "union_bg", "iou_fg"} <= set(eps.columns)
    one = eps[eps.run_id == runs.run_id[0]]
    assert len(one) == 40 and one.episode_id.is_unique


def test_index_and_console(two_shot_report):
    _, out, res = two_shot_report
    index = (out / "index.md").read_text()
    for name in ("runs.csv", "episodes.csv", "table_pascal_hsnet.md", "table_pascal_hsnet.tex", "table_pascal_hsnet.csv",
                 "paired.md", "fig_folds_pascal_hsnet_1shot.png", "fig_kshot_pascal_hsnet.pdf"):
        assert f"`{name}`" in index
        assert (out / name).stat().st_size > 0
    assert "fssbench report" in res.output and "63.0 ±" in res.output


def test_figures_only_what_the_data_supports(two_shot_report):
    _, out, _ = two_shot_report
    for stem in ("fig_folds_pascal_hsnet_1shot", "fig_folds_pascal_hsnet_5shot", "fig_kshot_pascal_hsnet"):
        for ext in ("png", "pdf"):
            p = out / f"{stem}.{ext}"
            assert p.is_file() and p.stat().st_size > 1000
    assert (out / "fig_folds_pascal_hsnet_1shot.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "fig_kshot_pascal_hsnet.pdf").read_bytes()[:4] == b"%PDF"
    assert not list(out.glob("fig_stitching_*"))  # one eval backbone per train backbone


def test_stitching_heatmap_and_no_kshot(app, tmp_path):
    res_dir = tmp_path / "results"
    # no records: the intervals stored in the run files are shown (±1.0)
    write_grid(res_dir, {"hsnet": 60.0}, folds=range(2), ci_half=1.0, records=False)
    write_grid(res_dir, {"hsnet": 50.0}, folds=range(2), eval_backbone="vit_b16", ci_half=1.0, records=False)
    r = invoke(app, "report", res_dir, "--out", tmp_path / "rep", *FAST)
    _ok(r)
    out = tmp_path / "rep"
    assert (out / "fig_stitching_pascal_hsnet_1shot.png").stat().st_size > 1000
    assert (out / "fig_stitching_pascal_hsnet_1shot.pdf").stat().st_size > 1000
    assert not list(out.glob("fig_kshot_*"))
    md = (out / "table_pascal_hsnet.md").read_text()
    assert "| hsnet | resnet50→vit_b16 | mask | 50.0 ±1.0 | 52.0 ±1.0 |" in md
    tex = (out / "table_pascal_hsnet.tex").read_text()
    assert "resnet50$\\rightarrow$vit\\_b16" in tex


def test_no_figures_flag(app, tmp_path):
    write_grid(tmp_path / "res", {"hsnet": 60.0}, folds=range(1))
    _ok(invoke(app, "report", tmp_path / "res", "--out", tmp_path / "rep", "--no-figures", *FAST))
    assert not list((tmp_path / "rep").glob("fig_*"))
    assert (tmp_path / "rep" / "table_pascal_hsnet.md").is_file()


# --------------------------------------------------------------------------------------------
# seeds, options, kinds, partial rows


def test_seeds_show_mean_and_sd_never_best(app, tmp_path):
    res_dir = tmp_path / "res"
    # seeds 0, 1, 2 -> 60, 61, 62 on fold 0 (mean 61, sd 1)
    write_grid(res_dir, {"hsnet": 60.0}, folds=range(2), seeds=(0, 1, 2), seed_jitter=1.0)
    _ok(invoke(app, "report", res_dir, "--out", tmp_path / "rep", "--no-figures", *FAST))
    md = (tmp_path / "rep" / "table_pascal_hsnet.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| hsnet"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3].startswith("61.0 ±") and cells[3].endswith("(sd 1.0, n=3)")
    assert cells[5].startswith("62.0 ±") and cells[5].endswith("(sd 1.0, n=3)")  # mean of folds (61 + 63) / 2
    assert "62.0 ±" not in cells[3]  # not the best seed
    assert "std across seeds" in md and "never best-of-N" in md
    csv = pd.read_csv(tmp_path / "rep" / "table_pascal_hsnet.csv")
    assert csv.loc[0, "1shot_fold0_miou_sd"] == pytest.approx(1.0)
    assert csv.loc[0, "1shot_fold0_miou_n_seeds"] == 3


def test_rows_by_options_and_kind_and_partial_folds(app, tmp_path):
    res_dir = tmp_path / "res"
    write_grid(res_dir, {"hsnet": 60.0}, ci_half=1.0, records=False)
    write_grid(res_dir, {"hsnet": 55.0}, kind="bbox", ci_half=1.0, records=False)
    write_grid(res_dir, {"hsnet": 58.0}, options={"aug": "diffss", "n": 2}, ci_half=1.0, records=False)
    write_run(res_dir, method="zeta", fold=0, miou=40.0, ci_half=1.0, records=False)  # one fold only
    _ok(invoke(app, "report", res_dir, "--out", tmp_path / "rep", "--no-figures", *FAST))
    md = (tmp_path / "rep" / "table_pascal_hsnet.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| Method")]
    labels = [tuple(c.strip() for c in line.strip("|").split("|")[:3]) for line in lines]
    assert labels == [("hsnet", "resnet50", "mask"), ("hsnet", "resnet50", "bbox"),
                      ("hsnet (aug=diffss, n=2)", "resnet50", "mask"), ("zeta", "resnet50", "mask")]
    zeta = [c.strip() for c in lines[-1].strip("|").split("|")]
    assert zeta[3] == "40.0 ±1.0" and zeta[4:9] == ["–"] * 5  # no mean without all folds
    assert method_label("hsnet", {"n": 2, "aug": "diffss"}) == "hsnet (aug=diffss, n=2)"


def test_labels_leave_out_default_options():
    resolved = {"layers": "auto", "hybrid_masking": False, "fg_weight": 6.0}
    assert method_label("hsnet", resolved) == "hsnet (fg_weight=6.0)"
    assert method_label("hsnet", resolved | {"fg_weight": 1.0}) == "hsnet"
    assert method_label("hm", resolved | {"hybrid_masking": True}) == "hm (fg_weight=6.0)"
    assert method_label("hm", resolved) == "hm (fg_weight=6.0, hybrid_masking=False)"
    assert method_label("not-installed", {"layers": "auto"}) == "not-installed (layers=auto)"


def test_rows_and_reference_follow_the_suite_order():
    """The suite lists the floor first: its rows come first and it is the default paired reference;
    runs without a rank (older files) sort after ranked ones, alphabetically."""
    runs = [make_run(method=m, miou=v, method_rank=r) for m, v, r in (("zeta", 30.0, 0), ("alpha", 50.0, 1))]
    runs.append(make_run(method="beta", miou=40.0))
    cells = compute_cells(runs, n_boot=50)
    assert list(dict.fromkeys(cells.method)) == ["zeta", "alpha", "beta"]
    paired = paired_comparisons(runs, n_boot=50, n_perm=100)
    assert set(paired.reference) == {"zeta"} and list(paired.method) == ["alpha", "beta"]


def test_default_reference_is_the_first_row_with_something_to_compare():
    """A first row without partners (here: another profile) does not swallow the comparisons."""
    runs = [make_run(method="hsnet", miou=55.0, profile="full", method_rank=0),
            make_run(method="hsnet", miou=60.0, method_rank=0), make_run(method="ours", miou=62.0, method_rank=1)]
    paired = paired_comparisons(runs, n_boot=50, n_perm=100)
    assert list(paired.reference) == ["hsnet [profile=quick]"] and list(paired.method) == ["ours"]
    assert paired.delta_miou.tolist() == pytest.approx([2.0])
    # naming the method picks its row that has partners too
    assert list(paired_comparisons(runs, reference="hsnet", n_boot=50, n_perm=100).reference) == ["hsnet [profile=quick]"]


def test_runs_without_records_propagate_intervals(tmp_path):
    runs = [make_run(fold=f, miou=60.0 + f, ci_half=2.0, records=False) for f in range(4)]
    cells = compute_cells(runs, n_boot=50)
    mean = cells[(cells.fold == "mean") & (cells.metric == "miou")].iloc[0]
    assert mean.ci_method == "propagated"
    assert mean.value == pytest.approx(61.5)
    assert (mean.ci_hi - mean.ci_lo) / 2 == pytest.approx(2.0 / 2)  # sqrt(4 * 2^2) / 4


def test_several_datasets_give_several_tables(app, tmp_path):
    write_grid(tmp_path / "res", {"hsnet": 60.0}, folds=range(2))
    write_grid(tmp_path / "res", {"hsnet": 40.0}, folds=range(2), dataset="coco", protocol="pfenet")
    _ok(invoke(app, "report", tmp_path / "res", "--out", tmp_path / "rep", "--no-figures", *FAST))
    assert (tmp_path / "rep" / "table_pascal_hsnet.md").is_file()
    assert (tmp_path / "rep" / "table_coco_pfenet.tex").is_file()


# --------------------------------------------------------------------------------------------
# paired comparisons


def test_paired_comparisons_against_reference(app, tmp_path, two_shot_report):
    _, out, _ = two_shot_report
    paired = pd.read_csv(out / "paired.csv")
    assert len(paired) == 8  # ours vs hsnet, 2 shots x 4 folds
    assert set(paired.reference) == {"hsnet"} and set(paired.method) == {"ours"}
    assert paired.delta_miou.tolist() == pytest.approx([2.0] * 8)
    assert (paired.p_holm >= paired.p_value - 1e-12).all() and (paired.p_holm <= 1).all()
    assert (paired.ci_lo <= paired.delta_miou + 1e-9).all() and (paired.ci_hi >= paired.delta_miou - 1e-9).all()
    assert "Δ mIoU vs hsnet" in (out / "paired.md").read_text()

    res_dir = two_shot_report[0]
    _ok(invoke(app, "report", res_dir, "--out", tmp_path / "rep", "--no-figures", "--reference", "ours", *FAST))
    flipped = pd.read_csv(tmp_path / "rep" / "paired.csv")
    assert set(flipped.reference) == {"ours"} and flipped.delta_miou.tolist() == pytest.approx([-2.0] * 8)


def test_paired_needs_identical_episodes(app, tmp_path):
    write_run(tmp_path / "res", method="a", miou=60.0, episode_hash="h1")
    write_run(tmp_path / "res", method="b", miou=62.0, episode_hash="h2")
    _ok(invoke(app, "report", tmp_path / "res", "--out", tmp_path / "rep", "--no-figures", *FAST))
    assert not (tmp_path / "rep" / "paired.csv").exists()
    assert "No paired comparisons" in (tmp_path / "rep" / "index.md").read_text()


def test_unknown_reference_is_a_user_error(app, two_shot_report, tmp_path):
    r = invoke(app, "report", two_shot_report[0], "--out", tmp_path / "rep", "--no-figures", "--reference", "nope", *FAST)
    assert r.exit_code != 0 and isinstance(r.exception, UserError)
    assert "nope" in str(r.exception) and "hsnet" in str(r.exception)


# --------------------------------------------------------------------------------------------
# bad inputs


def _user_error(res) -> str:
    assert res.exit_code != 0
    assert isinstance(res.exception, UserError), repr(res.exception)
    msg = str(res.exception)
    assert "\n" not in msg and msg
    return msg


def test_missing_results_dir(app, tmp_path):
    msg = _user_error(invoke(app, "report", tmp_path / "nope", "--out", tmp_path / "rep"))
    assert "does not exist" in msg


def test_empty_results_dir(app, tmp_path):
    (tmp_path / "empty").mkdir()
    msg = _user_error(invoke(app, "report", tmp_path / "empty", "--out", tmp_path / "rep"))
    assert "no run files" in msg
    assert not (tmp_path / "rep").exists()


def test_corrupt_run_file(app, tmp_path):
    write_run(tmp_path / "res", miou=60.0)
    (tmp_path / "res" / "broken.json").write_text("{not json")
    msg = _user_error(invoke(app, "report", tmp_path / "res", "--out", tmp_path / "rep"))
    assert "broken.json" in msg


def test_wrong_format_run_file(app, tmp_path):
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "x.json").write_text(json.dumps({"format": "other"}))
    _user_error(invoke(app, "report", tmp_path / "res", "--out", tmp_path / "rep"))
