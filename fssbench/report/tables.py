"""Paper-layout tables built from the cells frame: one per dataset and protocol."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fssbench.report.cells import TABLE_KEYS
from fssbench.report.labels import slug


@dataclass(frozen=True)
class TableRow:
    """A row as a table shows it (see :class:`fssbench.report.cells.Row`)."""

    key: str
    label: str
    backbone: str
    kind: str
    method: str
    options: str
    train_backbone: str
    eval_backbone: str

    def labels(self, arrow: str = "→") -> tuple[str, str, str]:
        return self.label, self.backbone.replace("→", arrow), self.kind


@dataclass
class Table:
    """One paper-layout table (one dataset and protocol)."""

    dataset: str
    protocol: str
    rows: list[TableRow]  # in display order
    shots: list[int]
    folds: list[int]
    cells: dict[tuple, dict[str, Any]]  # (row key, shot, fold|"mean", metric) -> cell record
    empty_classes: dict[int, list[int]] = field(default_factory=dict)  # fold -> classes without episodes
    subject: str = ""  # e.g. "output prior": what the table's numbers are, when not the prediction

    @property
    def tag(self) -> str:
        base = f"{self.dataset}_{self.protocol}" if self.protocol else self.dataset
        return slug(f"{base}_{self.subject}" if self.subject else base)

    @property
    def title(self) -> str:
        base = f"{self.dataset} ({self.protocol} protocol)" if self.protocol else self.dataset
        return f"{base}, {self.subject}" if self.subject else base

    def columns(self) -> list[tuple[int, Any, str]]:
        """(shot, fold|"mean", metric) in display order: per shot fold mIoUs, mean mIoU, FB-IoU."""
        cols = []
        for k in self.shots:
            cols += [(k, f, "miou") for f in self.folds] + [(k, "mean", "miou"), (k, "mean", "fbiou")]
        return cols

    def get(self, row: TableRow, col: tuple[int, Any, str]) -> dict[str, Any] | None:
        return self.cells.get((row.key, *col))

    def best(self) -> dict[tuple, set[str]]:
        """For each column, the keys of the rows holding the best (highest, at display precision) value."""
        out: dict[tuple, set[str]] = {}
        for col in self.columns():
            vals = {r.key: round(c["value"], 1) for r in self.rows if (c := self.get(r, col)) is not None}
            if len(vals) >= 2:
                top = max(vals.values())
                out[col] = {k for k, v in vals.items() if v == top}
        return out

    def row_labels(self, arrow: str = "→") -> list[tuple[str, str, str]]:
        return [r.labels(arrow) for r in self.rows]

    def any_seeds(self) -> bool:
        return any(c.get("n_runs", 1) > 1 and c.get("n_seeds", 1) > 1 for c in self.cells.values())


def build_tables(cells: pd.DataFrame, subject: str = "") -> list[Table]:
    tables: list[Table] = []
    if cells.empty:
        return tables
    for (ds, proto), sub in cells.groupby(list(TABLE_KEYS), sort=False):
        recs = sub.to_dict("records")
        rows: dict[str, TableRow] = {}
        for rec in recs:
            if rec["row"] not in rows:
                rows[rec["row"]] = TableRow(rec["row"], rec["label"], rec["backbone"], rec["kind"], rec["method"],
                                            rec["options"], rec["train_backbone"], rec["eval_backbone"])
        shots = sorted({int(s) for s in sub["shot"]})
        folds = sorted({int(f) for f in sub["fold"] if f != "mean"})
        cmap = {(rec["row"], int(rec["shot"]), rec["fold"], rec["metric"]): rec for rec in recs}
        empty: dict[int, set[int]] = {}
        for rec in recs:
            if rec["fold"] != "mean" and rec.get("empty_classes"):
                empty.setdefault(int(rec["fold"]), set()).update(json.loads(rec["empty_classes"]))
        tables.append(Table(str(ds), str(proto), list(rows.values()), shots, folds, cmap,
                            {f: sorted(v) for f, v in sorted(empty.items()) if v}, subject))
    return tables
