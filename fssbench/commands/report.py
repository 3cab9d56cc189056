"""``fssbench report`` (tables, figures, paired comparisons) and ``fssbench regress`` (CI gate)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fssbench.console import console, err_console
from fssbench.errors import UserError


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
    from fssbench.report import summary_table, write_report

    out_dir = out if out is not None else Path("reports") / results.name
    suite, tables, written = write_report(
        results, out_dir, reference=reference, n_boot=n_boot, n_perm=n_perm, seed=seed, figures=figures
    )
    console.print(summary_table(tables))
    console.print(f"wrote {len(written)} files for suite '{suite.name}' ({len(suite.runs)} runs) to {out_dir}; see {out_dir / 'index.md'}")


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
    from fssbench.regress import comparison_table, describe, run_regress, summary_lines

    suite, comp, written = run_regress(results, baseline, tolerance=tolerance, update=update, n_boot=n_boot, seed=seed)
    if comp is not None:
        console.print(comparison_table(comp, suite))
        for key in comp.new_cells:
            console.print(f"new: {describe(key)} (not in the baseline)", highlight=False, soft_wrap=True)
        for line in summary_lines(comp):
            console.print(line, highlight=False)
    if written is not None:
        console.print(f"wrote baseline {baseline} ({len(written['cells'])} cells, suite '{suite}')", highlight=False)
        return
    assert comp is not None
    if comp.failures:
        for c in comp.failures:
            err_console.print(c.line(), style="bold red", highlight=False, soft_wrap=True)
        n_reg = sum(c.status == "regressed" for c in comp.failures)
        # a UserError (exit 1), not typer.Exit: the CLI runs click with standalone_mode=False,
        # where an Exit's code is returned rather than used as the process status
        raise UserError(
            f"regression gate failed against {baseline}: {n_reg} metric(s) dropped beyond tolerance, "
            f"{len(comp.missing_cells)} baseline cell(s) missing from the results",
            exit_code=1,
        )
    console.print(f"[green]ok[/]: no cell dropped by more than its tolerance against {baseline}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("regress")(regress)
