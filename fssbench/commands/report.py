"""``fssbench report`` (tables, figures, paired comparisons) and ``fssbench regress`` (CI gate)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from fssbench.console import console, err_console
from fssbench.errors import UserError


def _results_folder(results: Path) -> None:
    """A results path that exists but is a file gets its own line (not "does not exist")."""
    if results.exists() and not results.is_dir():
        raise UserError(f"results folder '{results}' is a file, not a folder; pass the folder `fssbench run` wrote, e.g. results/<suite>")


def report(
    results: Path = typer.Argument(..., help="Results folder of a suite, e.g. results/<suite>."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report folder (default: reports/<suite folder name>)."),
    reference: Optional[str] = typer.Option(
        None, "--reference", "-r", help="Method (name or 'name (options)' label) the paired comparisons are against; default: the suite's first method."
    ),
    n_boot: int = typer.Option(1000, "--n-boot", min=10, help="Bootstrap resamples for recomputed intervals."),
    n_perm: int = typer.Option(10000, "--n-perm", min=10, help="Sign-flip randomisations per paired test."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap and randomisation draws."),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Write PNG/PDF figures."),
) -> None:
    """Paper-layout tables (Markdown, LaTeX, CSV), runs/episodes CSV, figures and paired comparisons."""
    from fssbench.report import reliance_summary, summary_table, write_report

    _results_folder(results)
    out_dir = out if out is not None else Path("reports") / results.name
    # write_report checks the report folder after loading the runs and before the (long) bootstrap work
    rep = write_report(results, out_dir, reference=reference, n_boot=n_boot, n_perm=n_perm, seed=seed, figures=figures,
                       out_what="report folder (--out)" if out is not None else "report folder")
    suite, written = rep.suite, rep.written
    console.print(summary_table(rep.tables))
    reliance = reliance_summary(rep.reliance)
    for line in reliance:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if reliance:
        console.print(f"support reliance (own vs other-class supports, paired Δ): {out_dir / 'support_reliance.md'}",
                      markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"wrote {len(written)} files for suite '{suite.name}' ({len(suite.runs)} runs) to {out_dir}; see {out_dir / 'index.md'}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def regress(
    results: Path = typer.Argument(..., help="Results folder of a suite, e.g. results/<suite>."),
    baseline: Path = typer.Option(..., "--baseline", "-b", help="Baseline JSON, e.g. results/baselines/<suite>.json."),
    tolerance: Optional[float] = typer.Option(
        None, "--tolerance", "-t", help="Allowed drop in points (default: the baseline's, else 1.0). Per-metric/per-cell values in the file win."
    ),
    update: bool = typer.Option(False, "--update", help="Write/refresh the baseline from these results (exit 0)."),
    n_boot: int = typer.Option(1000, "--n-boot", min=10, help="Bootstrap resamples for recomputed intervals."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap draws."),
) -> None:
    """Fail (exit 1) when a cell's mIoU or FB-IoU dropped by more than the tolerance, or a baseline cell is missing."""
    from fssbench.regress import comparison_table, run_regress, summary_lines

    _results_folder(results)
    if baseline.is_dir():
        raise UserError(
            f"baseline '{baseline}' is a folder, not a file; pass the baseline JSON, e.g. {baseline / 'SUITE.json'}"
        )
    suite, comp, written = run_regress(results, baseline, tolerance=tolerance, update=update, n_boot=n_boot, seed=seed)
    if comp is not None:
        console.print(comparison_table(comp, suite))
        for key in comp.new_cells:
            console.print(f"new: {comp.describe(key)} (not in the baseline)", markup=False, highlight=False, soft_wrap=True)
        for line in summary_lines(comp):
            console.print(line, markup=False, highlight=False)
    if written is not None:
        console.print(f"wrote baseline {baseline} ({len(written['cells'])} cells, suite '{suite}')", markup=False, highlight=False)
        return
    assert comp is not None
    if comp.failures:
        for c in comp.failures:
            err_console.print(c.line(), style="bold red", markup=False, highlight=False, soft_wrap=True)
        n_reg = sum(c.status == "regressed" for c in comp.failures)
        # a UserError (exit 1), not typer.Exit: the CLI runs click with standalone_mode=False,
        # where an Exit's code is returned rather than used as the process status
        raise UserError(
            f"regression gate failed against {baseline}: {n_reg} metric(s) dropped beyond tolerance, "
            f"{len(comp.missing_cells)} baseline cell(s) missing from the results",
            exit_code=1,
        )
    console.print(f"[green]ok[/]: no cell dropped by more than its tolerance against {escape(str(baseline))}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("regress")(regress)
