"""Figures (PNG and PDF): mIoU per fold, mIoU against shots, backbone-stitching heatmaps.

Each ``plot_*`` returns the matplotlib figure (tests read the plotted values back from its
artists); each ``figure_*`` plots, saves both formats and closes it.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from fssbench.report.labels import fold_name
from fssbench.report.tables import Table, TableRow


def short_labels(t: Table) -> list[str]:
    """Legend labels: the method label, plus backbone and kind where they vary in the table."""
    labs = t.row_labels()
    vary = [len({x[i] for x in labs}) > 1 for i in range(3)]
    vary[0] = True
    return [" · ".join(x[i] for i in range(3) if vary[i]) for x in labs]


def save_figure(fig: Any, out: Path, stem: str) -> list[Path]:
    import matplotlib.pyplot as plt

    paths = []
    for ext in ("png", "pdf"):
        p = out / f"{stem}.{ext}"
        fig.savefig(p, dpi=150, bbox_inches="tight")
        paths.append(p)
    plt.close(fig)
    return paths


def pyplot() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    return plt, sns


def _half(c: dict[str, Any], side: str) -> float:
    if side == "lo":
        return max(c["value"] - c["ci_lo"], 0) if not math.isnan(c["ci_lo"]) else 0.0
    return max(c["ci_hi"] - c["value"], 0) if not math.isnan(c["ci_hi"]) else 0.0


def plot_folds(t: Table, shot: int) -> Any:
    """Grouped bars: mIoU per fold (and the mean) per row, 95% interval error bars; one bar
    container per row, labelled with the row's legend label."""
    plt, sns = pyplot()
    groups = [*t.folds, "mean"]
    labels = short_labels(t)
    colors = sns.color_palette("tab10", n_colors=max(len(t.rows), 1))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(groups) * max(1, len(t.rows)) ** 0.5 + 2), 3.2))
    width = 0.8 / max(len(t.rows), 1)
    for i, r in enumerate(t.rows):
        xs, ys, err = [], [], [[], []]
        for j, f in enumerate(groups):
            c = t.get(r, (shot, f, "miou"))
            if c is None:
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(c["value"])
            err[0].append(_half(c, "lo"))
            err[1].append(_half(c, "hi"))
        if xs:
            ax.bar(xs, ys, width=width * 0.95, yerr=err, capsize=2, color=colors[i % len(colors)], label=labels[i])
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([fold_name(f) for f in groups])
    ax.set_ylabel("mIoU (%)")
    ax.set_title(f"{t.title}, {shot}-shot")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return fig


def figure_folds(t: Table, shot: int, out: Path) -> list[Path]:
    return save_figure(plot_folds(t, shot), out, f"fig_folds_{t.tag}_{shot}shot")


def plot_kshot(t: Table) -> Any:
    """mIoU (fold mean) against k, one line per row (labelled), 95% interval bands."""
    plt, sns = pyplot()
    labels = short_labels(t)
    colors = sns.color_palette("tab10", n_colors=max(len(t.rows), 1))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for i, r in enumerate(t.rows):
        pts = [(k, c) for k in t.shots if (c := t.get(r, (k, "mean", "miou"))) is not None]
        if not pts:
            continue
        ks = [k for k, _ in pts]
        ax.plot(ks, [c["value"] for _, c in pts], marker="o", color=colors[i % len(colors)], label=labels[i])
        ax.fill_between(ks, [c["ci_lo"] for _, c in pts], [c["ci_hi"] for _, c in pts], color=colors[i % len(colors)], alpha=0.2)
    ax.set_xticks(t.shots)
    ax.set_xlabel("shots (k)")
    ax.set_ylabel("mIoU, mean over folds (%)")
    ax.set_title(t.title)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return fig


def figure_kshot(t: Table, out: Path) -> list[Path]:
    return save_figure(plot_kshot(t), out, f"fig_kshot_{t.tag}")


def kshot_supported(t: Table) -> bool:
    """Several shots, and some row has a fold mean for at least two of them."""
    return len(t.shots) > 1 and any(
        sum(t.get(r, (k, "mean", "miou")) is not None for k in t.shots) >= 2 for r in t.rows
    )


def stitching_groups(t: Table, shot: int) -> dict[tuple[str, str], list[TableRow]]:
    """(label, kind) -> rows, for rows with a fold-mean mIoU at ``shot`` on several eval backbones
    of one train backbone."""
    by: dict[tuple[str, str], list[TableRow]] = {}
    for r in t.rows:
        if t.get(r, (shot, "mean", "miou")) is not None:
            by.setdefault((r.label, r.kind), []).append(r)
    keep = {}
    for key, rows in by.items():
        evals: dict[str, set[str]] = {}
        for r in rows:
            evals.setdefault(r.train_backbone, set()).add(r.eval_backbone)
        if any(len(v) > 1 for v in evals.values()):
            keep[key] = rows
    return keep


def stitching_grid(t: Table, shot: int, rows: list[TableRow], extra: Sequence[tuple[str, str]] = ()) -> pd.DataFrame:
    """train × eval backbone frame of fold-mean mIoU (NaN where not run; ``extra`` pairs get a
    row/column too, e.g. incompatible cells)."""
    trains = list(dict.fromkeys([r.train_backbone for r in rows] + [a for a, _ in extra]))
    evals = list(dict.fromkeys([r.eval_backbone for r in rows] + [b for _, b in extra]))
    grid = pd.DataFrame(np.nan, index=trains, columns=evals)
    for r in rows:
        c = t.get(r, (shot, "mean", "miou"))
        if c is not None:
            grid.loc[r.train_backbone, r.eval_backbone] = c["value"]
    return grid


def incompatible_pairs(incompatible: Sequence[Any], label: str, kind: str, shot: int) -> list[tuple[str, str]]:
    """(train, eval) backbone pairs of the incompatible runs of one heatmap."""
    from fssbench.report.labels import method_label

    def named(c: dict) -> bool:  # the suite's label, or the label tables give (options that differ from defaults)
        return label in (c.get("label", c["method"]), method_label(c["method"], c.get("method_options", {})))

    return list(dict.fromkeys(
        (r.config["train_backbone"], r.config["eval_backbone"]) for r in incompatible
        if named(r.config) and r.config["kind"] == kind and r.config["shot"] == shot
    ))


def plot_stitching(t: Table, shot: int, incompatible: Sequence[Any] = ()) -> Any:
    """Heatmaps of mIoU (fold mean; the fold value when a table has one fold): train × eval backbone,
    one axis per (label, kind); incompatible pairs are hatched and say so."""
    plt, sns = pyplot()
    groups = stitching_groups(t, shot)
    n = len(groups)
    grids = {}
    for (label, kind), rows in groups.items():
        bad = incompatible_pairs(incompatible, label, kind, shot)
        grids[(label, kind)] = (stitching_grid(t, shot, rows, bad), bad)
    values = np.concatenate([g.to_numpy().ravel() for g, _ in grids.values()])
    values = values[np.isfinite(values)]
    # one colour scale for every panel: the same colour is the same mIoU in every method's panel
    vmin, vmax = (float(values.min()), float(values.max())) if values.size else (0.0, 100.0)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n + 0.5, 3.8), squeeze=False)
    for k, (ax, ((label, kind), (grid, bad))) in enumerate(zip(axes[0], grids.items())):
        sns.heatmap(grid, annot=True, fmt=".1f", cmap="viridis", ax=ax, cbar=k == n - 1, vmin=vmin, vmax=vmax)
        for a, b in bad:
            i, j = list(grid.index).index(a), list(grid.columns).index(b)
            ax.add_patch(plt.Rectangle((j, i), 1, 1, fill=False, hatch="//", edgecolor="0.5", lw=0))
            ax.text(j + 0.5, i + 0.5, "incompatible", ha="center", va="center", fontsize="x-small", color="0.3")
        ax.tick_params(axis="y", labelrotation=0)
        ax.tick_params(axis="x", labelrotation=30)
        ax.set_xlabel("eval backbone")
        ax.set_ylabel("train backbone")
        ax.set_title("\n".join(textwrap.wrap(f"{label} · {kind}", 42)), fontsize="small")
    fig.suptitle(f"{t.title}, {shot}-shot: backbone stitching (mIoU; rows: decoder trained on, columns: evaluated on)")
    fig.tight_layout()
    return fig


def figure_stitching(t: Table, shot: int, out: Path, incompatible: Sequence[Any] = ()) -> list[Path]:
    return save_figure(plot_stitching(t, shot, incompatible), out, f"fig_stitching_{t.tag}_{shot}shot")
