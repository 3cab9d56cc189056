"""``write_report``: every file of ``fssbench report`` and its index."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fssbench.report.auxiliary import aux_frame, aux_markdown, figure_aux_panel
from fssbench.report.cells import compute_cells
from fssbench.report.figures import figure_folds, figure_kshot, figure_stitching, kshot_supported, stitching_groups
from fssbench.report.frames import Suite, load_suite
from fssbench.report.identity import is_control
from fssbench.report.panels import figure_error_maps, figure_qualitative, figure_sensitivity, figure_trajectories
from fssbench.report.outputs import output_cells, output_deltas, output_deltas_markdown, output_tables
from fssbench.report.parameters import parameters_markdown
from fssbench.report.paired import paired_comparisons, paired_markdown, reliance_markdown, support_reliance
from fssbench.report.render import table_frame, table_latex, table_markdown
from fssbench.report.stitching import figure_prior_iou, prior_iou_frame, retrained_markdown, upgrade_frame, upgrade_markdown
from fssbench.report.tables import Table, build_tables


@dataclass
class Written:
    path: Path
    what: str


@dataclass
class Report:
    """What :func:`write_report` computed and wrote."""

    suite: Suite
    tables: list[Table]
    written: list[Written]
    paired: pd.DataFrame = field(default_factory=pd.DataFrame)
    reliance: pd.DataFrame = field(default_factory=pd.DataFrame)
    output_tables: list[Table] = field(default_factory=list)


def write_report(
    results_dir: str | Path,
    out_dir: str | Path,
    *,
    reference: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    n_perm: int = 10000,
    figures: bool = True,
    out_what: str = "report folder",
) -> Report:
    """Write everything ``fssbench report`` writes; return what it computed and the files.

    The report folder (``out_what`` names it in messages) is created and proven writable after
    the runs load (a bad results folder leaves no empty report folder behind) and before any
    bootstrap work."""
    from fssbench.episodes import atomic_write_text
    from fssbench.paths import writable_dir

    suite = load_suite(results_dir)
    out = writable_dir(out_dir, out_what)
    written: list[Written] = []

    def text(name: str, body: str, what: str) -> None:
        written.append(Written(atomic_write_text(out / name, body), what))

    def csv(name: str, df: pd.DataFrame, what: str) -> None:
        text(name, df.to_csv(index=False), what)

    main = [r for r in suite.runs if not is_control(r.config)]
    controls = len(suite.runs) - len(main)
    csv("runs.csv", suite.runs_df, f"one row per run ({len(suite.runs_df)} runs): keys, flattened config, metrics, provenance")
    ep = suite.episodes_df
    csv("episodes.csv", ep, f"one row per scored episode per run ({len(ep)} rows): query, intersections/unions, fg IoU, extras")
    cells = compute_cells(main, n_boot=n_boot, seed=seed)
    csv("cells.csv", cells, "every table cell in long form: value, 95% interval, seed sd, runs averaged, identity")
    tables = build_tables(cells)
    for t in tables:
        text(f"table_{t.tag}.md", table_markdown(t), f"{t.title}: paper-layout table (Markdown)")
        text(f"table_{t.tag}.tex", table_latex(t), f"{t.title}: paper-layout table (LaTeX, booktabs)")
        csv(f"table_{t.tag}.csv", table_frame(t), f"{t.title}: paper-layout table (CSV, value with _lo/_hi bounds)")

    ocells = output_cells(main, n_boot=n_boot, seed=seed)
    otables = output_tables(ocells)
    if otables:
        body = ["# Mask outputs", "", "mIoU of each declared mask output (e.g. a prior), scored like the prediction "
                "under the same protocol; same layout and intervals as the main tables.", ""]
        body += [table_markdown(t) for t in otables]
        deltas = output_deltas(main, n_boot=n_boot, seed=seed, n_perm=n_perm)
        if not deltas.empty:
            body += [output_deltas_markdown(deltas)]
            csv("output_deltas.csv", deltas, "prediction − mask output per run, paired (CSV)")
        text("outputs.md", "\n".join(body), "mIoU of the methods' mask outputs per cell, and prediction − output paired (Markdown)")
        csv("outputs.csv", ocells, "mask-output cells in long form (CSV)")

    paired = paired_comparisons(main, reference=reference, n_boot=n_boot, seed=seed, n_perm=n_perm)
    if not paired.empty:
        text("paired.md", paired_markdown(paired), "paired Δ mIoU vs the reference on identical episodes, Holm-adjusted")
        csv("paired.csv", paired, "paired comparisons (CSV)")

    reliance, unmatched = support_reliance(suite.runs, n_boot=n_boot, seed=seed, n_perm=n_perm)
    if controls:
        text("support_reliance.md", reliance_markdown(reliance, unmatched),
             "support-reliance control: mIoU with own vs other-class supports, paired Δ")
        csv("support_reliance.csv", reliance, "support-reliance control (CSV)")

    if suite.incompatible:
        rows = ["# Incompatible cells", "", "Runs the method cannot do on this pair of backbones (no rule maps its decoder "
                "onto the evaluation backbone); kept as explicit cells, never silently dropped.", "",
                "| method | train → eval backbone | fold | shot | why |", "|---|---|--:|--:|---|"]
        for r in sorted(suite.incompatible, key=lambda r: r.run_id):
            c = r.config
            rows.append(f"| {c.get('label', c['method'])} | {c['train_backbone']} → {c['eval_backbone']} | {c['fold']} | "
                        f"{c['shot']} | {r.reason} |")
        text("incompatible.md", "\n".join(rows) + "\n", f"{len(suite.incompatible)} incompatible cells and why")

    upgrades = upgrade_frame(main, n_boot=n_boot, seed=seed, n_perm=n_perm)
    if not upgrades.empty:
        text("upgrade.md", upgrade_markdown(upgrades, suite.incompatible),
             "backbone upgrade without re-training: before / after stitching, paired Δ (Table 5 layout)")
        csv("upgrade.csv", upgrades, "backbone upgrade table (CSV)")
        text("stitched_vs_retrained.md", retrained_markdown(upgrades),
             "per evaluation backbone: its re-trained decoder vs every decoder stitched onto it, paired Δ")
    auxdf = aux_frame(main, n_boot=n_boot, seed=seed, n_perm=n_perm)
    if not auxdf.empty:
        text("auxiliary.md", aux_markdown(auxdf), "auxiliary supports: mIoU without / with, paired Δ, fallbacks")
        csv("auxiliary.csv", auxdf, "auxiliary supports (CSV)")
    params = parameters_markdown(main)
    if params:
        text("parameters.md", params, "trainable parameters per method and training backbone")
    priors = prior_iou_frame(main)

    if figures:
        for paths, what in [*figure_sensitivity(cells, out), *figure_qualitative(main, suite.directory, out),
                            *figure_trajectories(main, suite.directory, out), *figure_error_maps(main, suite.directory, out)]:
            written.extend(Written(p, what) for p in paths)
        if not auxdf.empty:
            for p in figure_aux_panel(main, suite.directory, out):
                written.append(Written(p, "support / condition / auxiliary images per condition (panel)"))
        if not priors.empty:
            for p in figure_prior_iou(priors, out):
                written.append(Written(p, "per-episode prior IoU per evaluation backbone: histogram + KDE (Fig. 6 layout)"))
        for t in tables:
            for k in t.shots:
                for p in figure_folds(t, k, out):
                    written.append(Written(p, f"{t.title}, {k}-shot: mIoU per fold with 95% intervals"))
            if kshot_supported(t):
                for p in figure_kshot(t, out):
                    written.append(Written(p, f"{t.title}: mIoU vs shots with 95% bands"))
            for k in t.shots:
                if stitching_groups(t, k):
                    for p in figure_stitching(t, k, out, suite.incompatible):
                        written.append(Written(p, f"{t.title}, {k}-shot: train × eval backbone heatmap"))

    lines = [f"# Report: {suite.name}", "", f"Source: `{suite.directory}` ({len(suite.runs)} runs"
             + (f", {controls} of them support-reliance controls, kept out of the tables" if controls else "") + ").", ""]
    for t in tables:
        lines += [table_markdown(t), ""]
    if not paired.empty:
        lines += ["## Paired comparisons", "", paired_markdown(paired), ""]
    else:
        lines += ["No paired comparisons: no two methods share an episode list (hash) in a table.", ""]
    if controls:
        lines += [reliance_markdown(reliance, unmatched), ""]
    if not upgrades.empty:
        lines += [upgrade_markdown(upgrades, suite.incompatible).replace("# Backbone", "## Backbone", 1), ""]
    if not auxdf.empty:
        lines += [aux_markdown(auxdf).replace("# Auxiliary", "## Auxiliary", 1), ""]
    if params:
        lines += [params.replace("# Trainable", "## Trainable", 1), ""]
    lines += ["## Files", ""]
    lines += [f"- [`{w.path.name}`]({w.path.name}): {w.what}" for w in written]
    lines += ["", "Cells and intervals: see the docstrings of `fssbench/report/cells.py` (what a cell averages) and "
              "`fssbench.metrics.bootstrap_replicates` (cluster bootstrap of query images within fold and class).", ""]
    idx = atomic_write_text(out / "index.md", "\n".join(lines))
    written.append(Written(idx, "this index"))
    return Report(suite, tables, written, paired, reliance, otables)
