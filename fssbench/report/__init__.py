"""Turn a folder of run files into the tables, figures and comparisons a paper needs.

Data first: every run becomes one row of ``runs.csv`` and every scored episode one row of
``episodes.csv``; everything else is computed from those.

Modules, one job each: ``identity`` (what makes runs one cell), ``labels`` (how rows read),
``frames`` (loading; runs/episodes frames), ``cells`` (values, intervals, rows), ``tables``
(paper layout), ``render`` (Markdown, LaTeX, CSV, console), ``paired`` (paired comparisons and
the support-reliance control), ``outputs`` (mask-output tables), ``figures``, ``write``
(``write_report``). Cells and intervals are described in ``cells``.

Markdown/LaTeX cells read ``62.3 ±1.1`` (± = half the 95% interval; the exact bounds are in the
CSV files) and, for several runs (seeds) of one configuration, ``62.3 ±1.1 (sd 0.8, n=3)``.
"""

from fssbench.report.cells import (
    CELL_KEYS,
    KIND_ORDER,
    METRIC_NAMES,
    METRICS,
    TABLE_KEYS,
    UNRANKED,
    Row,
    RunStats,
    assign_rows,
    cell_stats,
    compute_cells,
)
from fssbench.report.figures import (
    figure_folds,
    figure_kshot,
    figure_stitching,
    kshot_supported,
    plot_folds,
    plot_kshot,
    plot_stitching,
    stitching_grid,
    stitching_groups,
)
from fssbench.report.frames import RECORD_FIELDS, Suite, episodes_frame, load_runs, load_suite, run_keys, runs_frame
from fssbench.report.identity import (
    NON_IDENTITY_KEYS,
    OTHER_CLASS,
    OWN_SUPPORTS,
    READABLE_KEYS,
    cell_identity,
    identity_dict,
    is_control,
    join_identity,
    run_seeds,
    seeds_label,
    split_identity,
)
from fssbench.report.labels import (
    backbone_label,
    disambiguate,
    fold_name,
    method_label,
    options_dict,
    options_json,
    options_label,
    slug,
)
from fssbench.report.outputs import mask_output_names, output_cells, output_run, output_tables
from fssbench.report.paired import (
    NOT_USED,
    paired_comparisons,
    paired_markdown,
    reliance_markdown,
    reliance_summary,
    resolve_reference,
    support_reliance,
)
from fssbench.report.render import fmt_cell, summary_table, table_frame, table_latex, table_markdown, table_note
from fssbench.report.tables import Table, TableRow, build_tables
from fssbench.report.write import Report, Written, write_report

__all__ = [
    "CELL_KEYS", "KIND_ORDER", "METRIC_NAMES", "METRICS", "NON_IDENTITY_KEYS", "NOT_USED", "OTHER_CLASS", "OWN_SUPPORTS",
    "READABLE_KEYS", "RECORD_FIELDS", "TABLE_KEYS", "UNRANKED", "Report", "Row", "RunStats", "Suite", "Table", "TableRow",
    "Written", "assign_rows", "backbone_label", "build_tables", "cell_identity", "cell_stats", "compute_cells",
    "disambiguate", "episodes_frame", "figure_folds", "figure_kshot", "figure_stitching", "fmt_cell", "fold_name",
    "identity_dict", "is_control", "join_identity", "kshot_supported", "load_runs", "load_suite", "mask_output_names",
    "method_label", "options_dict", "options_json", "options_label", "output_cells", "output_run", "output_tables",
    "paired_comparisons", "paired_markdown", "plot_folds", "plot_kshot", "plot_stitching", "reliance_markdown",
    "reliance_summary", "resolve_reference", "run_keys", "run_seeds", "runs_frame", "seeds_label", "slug",
    "split_identity", "stitching_grid", "stitching_groups", "summary_table", "support_reliance", "table_frame",
    "table_latex", "table_markdown", "table_note", "write_report",
]
