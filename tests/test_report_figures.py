"""Figures show the cell values: bar heights, error bars, line data, bands and heatmap arrays are
read back from the matplotlib artists and compared with the cells; PNG and PDF are written."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fixtures_results import make_run  # noqa: E402

from fssbench.report import (  # noqa: E402
    build_tables,
    compute_cells,
    figure_folds,
    figure_kshot,
    figure_stitching,
    plot_folds,
    plot_kshot,
    plot_stitching,
)


@pytest.fixture(scope="module")
def table():
    """hsnet: 60 + 2f (+5 at 5-shot), ours: 62 + 2f; two folds, two shots; ours' eval backbone varies."""
    runs = []
    for m, base in (("hsnet", 60.0), ("ours", 62.0)):
        for si, k in enumerate((1, 5)):
            for f in range(2):
                runs.append(make_run(method=m, fold=f, shot=k, miou=base + 2 * f + 5 * si, queries=4))
    for f in range(2):
        runs.append(make_run(method="ours", fold=f, shot=1, miou=40.0 + f, eval_backbone="vit_b16", queries=4))
    (t,) = build_tables(compute_cells(runs, n_boot=100))
    return t


def _close(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_fold_bars_are_the_cell_values_with_their_intervals(table):
    from matplotlib.container import BarContainer

    fig = plot_folds(table, 5)
    ax = fig.axes[0]
    bars = {c.get_label(): c for c in ax.containers if isinstance(c, BarContainer)}
    hsnet, ours = (next(r for r in table.rows if r.label == m and r.eval_backbone == "resnet50") for m in ("hsnet", "ours"))
    assert len(bars) == 2  # rows without 5-shot cells draw no bars
    for row in (hsnet, ours):
        container = next(c for lab, c in bars.items() if lab.startswith(row.label + " ·") and "vit" not in lab)
        cells = [table.get(row, (5, f, "miou")) for f in (0, 1, "mean")]
        assert [p.get_height() for p in container.patches] == pytest.approx([c["value"] for c in cells])
        segs = container.errorbar.lines[2][0].get_segments()  # one vertical segment per bar: [lo, hi]
        assert [y for s in segs for y in (s[0][1], s[1][1])] == pytest.approx([y for c in cells for y in (c["ci_lo"], c["ci_hi"])])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["fold0", "fold1", "mean"]
    _close(fig)


def test_kshot_lines_are_the_fold_means(table):
    fig = plot_kshot(table)
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    row = next(r for r in table.rows if r.label == "hsnet")
    line = next(ln for lab, ln in lines.items() if lab.startswith("hsnet"))
    assert list(line.get_xdata()) == [1, 5]
    assert list(line.get_ydata()) == pytest.approx([table.get(row, (k, "mean", "miou"))["value"] for k in (1, 5)])
    assert line.get_ydata()[1] == pytest.approx(66.0)  # (65 + 67) / 2
    # the 95% band spans the interval
    band = ax.collections[0].get_paths()[0].vertices
    lo = [table.get(row, (k, "mean", "miou"))["ci_lo"] for k in (1, 5)]
    hi = [table.get(row, (k, "mean", "miou"))["ci_hi"] for k in (1, 5)]
    assert band[:, 1].min() == pytest.approx(min(lo)) and band[:, 1].max() == pytest.approx(max(hi))
    vit = next(ln for lab, ln in lines.items() if "vit" in lab)
    assert len(lines) == 3 and list(vit.get_xdata()) == [1]  # the vit row has one shot: one point
    _close(fig)


def test_stitching_heatmap_array_is_the_grid(table):
    fig = plot_stitching(table, 1)
    ax = fig.axes[0]
    arr = np.ma.filled(ax.collections[0].get_array(), np.nan).reshape(1, 2)
    assert arr.ravel().tolist() == pytest.approx([63.0, 40.5])  # ours: resnet50→resnet50, resnet50→vit_b16 fold means
    assert [t.get_text() for t in ax.get_xticklabels()] == ["resnet50", "vit_b16"]
    assert "ours" in ax.get_title()
    _close(fig)


def test_figures_are_written_as_png_and_pdf(table, tmp_path):
    paths = figure_folds(table, 1, tmp_path) + figure_kshot(table, tmp_path) + figure_stitching(table, 1, tmp_path)
    assert [p.suffix for p in paths] == [".png", ".pdf"] * 3
    for p in paths:
        assert p.read_bytes()[:4] == (b"\x89PNG" if p.suffix == ".png" else b"%PDF")


def test_incompatible_cells_are_found_under_the_label_tables_show():
    from fssbench.report.figures import incompatible_pairs

    r = make_run(method="hsnet", options={"fg_weight": 4.0}, train_backbone="zoo-rn-s", eval_backbone="zoo-vit", records=False)
    r.status = "incompatible"
    assert r.config["label"] == "hsnet"  # the suite's label: the method name
    for label in ("hsnet", "hsnet (fg_weight=4.0)"):  # the table label names the options that differ from defaults
        assert incompatible_pairs([r], label, "mask", 1) == [("zoo-rn-s", "zoo-vit")], label
    assert incompatible_pairs([r], "hsnet (fg_weight=2.0)", "mask", 1) == []
