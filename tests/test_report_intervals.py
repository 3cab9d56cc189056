"""Honest intervals in the report: query images resampled within class (HSNet repeats queries),
one bootstrap for single runs, seed means and fold means, empty fold classes counted and said."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fixtures_results import make_run, write_grid  # noqa: E402

import fssbench.report.cells as cells_mod  # noqa: E402
from fssbench.metrics import IoUMeter, Sample, bootstrap_ci, bootstrap_replicates, percentile_interval  # noqa: E402
from fssbench.report import build_tables, compute_cells, table_latex, table_markdown, write_report  # noqa: E402


def _cell(cells, fold, metric="miou"):
    return cells[(cells.fold == fold) & (cells.metric == metric)].iloc[0]


def test_repeated_queries_give_a_wider_interval_equal_to_the_cluster_bootstrap():
    # 8 episodes per class over 4 query images: each query is scored twice
    run = make_run(miou=60.0, queries=4)
    assert len({r.query for r in run.records}) == 20 and len(run.records) == 40
    cell = _cell(compute_cells([run], n_boot=400), 0)
    ids = run.metrics["fold_classes"]
    assert (cell.ci_lo, cell.ci_hi) == pytest.approx(bootstrap_ci(run.records, n_boot=400, seed=0, class_ids=ids), abs=1e-9)
    lo_e, hi_e = bootstrap_ci(run.records, n_boot=400, seed=0, class_ids=ids, cluster="episode")
    assert (cell.ci_hi - cell.ci_lo) > 1.25 * (hi_e - lo_e)  # ~sqrt(2): repeats are not new evidence


def test_single_run_seed_mean_and_fold_mean_use_one_bootstrap(monkeypatch):
    calls = []
    real = cells_mod.bootstrap_replicates

    def spy(samples, **kw):
        calls.append(len(samples))
        return real(samples, **kw)

    monkeypatch.setattr(cells_mod, "bootstrap_replicates", spy)
    assert real is bootstrap_replicates  # the report has no bootstrap of its own
    runs = [make_run(fold=f, miou=60.0 + 2 * f, queries=4, train_seed=t) for f in range(2) for t in range(2)]
    cells = compute_cells(runs, n_boot=300)
    assert set(cells.ci_method) == {"bootstrap"}
    assert sorted(calls) == [2, 2, 2, 2, 4, 4]  # (fold0, fold1: 2 seeds each; mean: 4 runs) x 2 metrics
    # the fold mean's interval is that function on the weighted runs, grouped by fold
    samples = [Sample(r.records, tuple(r.metrics["fold_classes"]), 0.25, r.config["fold"], r.episode_hash) for r in runs]
    mean = _cell(cells, "mean")
    assert (mean.ci_lo, mean.ci_hi) == pytest.approx(percentile_interval(real(samples, n_boot=300, seed=0)), abs=1e-9)
    assert mean.value == pytest.approx(61.0) and mean.n_runs == 4 and mean.n_seeds == 2


def test_seeds_scored_on_the_same_queries_share_the_draw():
    """Two training seeds with identical records: the seed mean keeps the single run's interval
    (independent draws would pretend the two runs saw different images)."""
    one = _cell(compute_cells([make_run(queries=4)], n_boot=300), 0)
    two = _cell(compute_cells([make_run(queries=4, train_seed=0), make_run(queries=4, train_seed=1)], n_boot=300), 0)
    assert two.n_runs == 2 and (two.ci_lo, two.ci_hi) == pytest.approx((one.ci_lo, one.ci_hi), abs=1e-9)


def test_empty_fold_class_lowers_miou_as_in_hsnet_and_is_named(tmp_path):
    run = make_run(miou=60.0, n_classes=4, empty_classes=[99])
    hsnet = IoUMeter(class_ids=run.metrics["fold_classes"]).update(run.records).compute()["miou"]
    assert hsnet == pytest.approx(60.0 * 4 / 5)
    cells = compute_cells([run], n_boot=200)
    cell = _cell(cells, 0)
    assert cell.value == pytest.approx(hsnet) and cell.ci_lo < hsnet < cell.ci_hi < 60.0
    assert cell.empty_classes == "[99]"
    t = build_tables(cells)[0]
    assert t.empty_classes == {0: [99]}
    md, tex = table_markdown(t), table_latex(t)
    assert "fold0: class 99" in md and "IoU 0" in md and "HSNet" in md
    assert "fold0: class 99" in tex
    # a run file without fold_classes (older) averages over the classes it has, and says nothing
    old = make_run(miou=60.0, legacy=True)
    t_old = build_tables(compute_cells([old], n_boot=50))[0]
    assert _cell(compute_cells([old], n_boot=50), 0).value == pytest.approx(60.0) and "IoU 0" not in table_markdown(t_old)


def test_empty_classes_note_in_the_written_report(tmp_path):
    write_grid(tmp_path / "res", {"hsnet": 60.0}, folds=range(2), empty_classes=[50])
    write_report(tmp_path / "res", tmp_path / "rep", n_boot=50, n_perm=50, figures=False)
    md = (tmp_path / "rep" / "table_pascal_hsnet.md").read_text()
    assert "fold0: class 50; fold1: class 50" in md
