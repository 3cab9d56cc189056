"""Cells: the numbers of a paper table, each with its 95% interval, seed spread and run count.

A *cell* is one number of a table: one :func:`~fssbench.report.identity.cell_identity` (every
config key except seeds and bookkeeping; see ``identity.py``), for ``miou`` and ``fbiou``. It
averages the runs of that identity, i.e. seeds (never the best), ``sd`` is their standard
deviation (ddof=1) and ``n_runs`` how many runs it averages. Cells whose identities differ only
by shot and fold form a table *row*; ``fold == "mean"`` is the mean of a row's fold values at one
shot (as in the papers), present when the row covers every fold of its table.

Values and intervals come from the per-episode records, through ONE implementation,
:func:`fssbench.metrics.bootstrap_replicates`, for single runs, seed means and fold means alike:

* the value is the linear combination (mean over folds of the mean over runs) of each run's
  class-wise mIoU / FB-IoU, recomputed over the fold's classes (``metrics["fold_classes"]``): a
  fold class without episodes counts IoU 0, as in HSNet, and is named in the table note;
* the 95% interval is a stratified *cluster* bootstrap: within every fold and class, query
  images (each with all its episodes; HSNet's protocol repeats queries) are drawn with
  replacement, the same draw for every run of the fold (they score the same images), and the
  combination is recomputed. It covers query-sampling uncertainty only; the training-seed
  spread is ``sd``.
* runs without records fall back to the interval stored in the run file (one run) or to
  propagation assuming independence: the half-width of a mean of ``m`` values is
  ``sqrt(sum h_i^2) / m``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from fssbench.errors import UserError
from fssbench.metrics import Sample, bootstrap_replicates, percentile_interval, sample_statistic
from fssbench.report.frames import run_keys, stored_ci
from fssbench.report.identity import (
    FOLD_VARYING_KEYS,
    POSITION_KEYS,
    READABLE_KEYS,
    canonical,
    identity_dict,
    merge_over_folds,
    short_id,
    split_identity,
)
from fssbench.report.labels import aux_label, backbone_label, disambiguate, method_label
from fssbench.results import RunResult

METRICS: tuple[str, ...] = ("miou", "fbiou")
METRIC_NAMES = {"miou": "mIoU", "fbiou": "FB-IoU"}
TABLE_KEYS: tuple[str, ...] = ("dataset", "protocol")
"""One table per dataset and protocol."""
CELL_KEYS: tuple[str, ...] = READABLE_KEYS
"""The readable fields of a cell (the rest of its identity is the ``config`` column)."""
KIND_ORDER = ("mask", "bbox", "scribble", "image", "text")
UNRANKED = 10**6


# --------------------------------------------------------------------------------------------
# one run


class RunStats:
    """A run's identity, its records and its values recomputed over the fold's classes."""

    def __init__(self, run: RunResult) -> None:
        self.run = run
        self.keys = run_keys(run)
        self.ident = identity_dict(run.config)
        self.cell = canonical(self.ident)
        m = run.metrics
        fc = m.get("fold_classes")
        self.class_ids: tuple[int, ...] | None = tuple(sorted(int(c) for c in fc)) if isinstance(fc, (list, tuple)) and fc else None
        self.records = list(run.records)
        self.ci = {"miou": stored_ci(m, "miou_ci"), "fbiou": stored_ci(m, "fbiou_ci")}
        self.value = {"miou": float(m["miou"]), "fbiou": float(m["fbiou"]) if m.get("fbiou") is not None else math.nan}
        if self.records:
            try:
                self.value = {k: sample_statistic([Sample(self.records, self.class_ids)], k) for k in METRICS}
            except ValueError as exc:
                raise UserError(f"run '{run.run_id}': {exc} (metrics.fold_classes); re-run it") from None
        present = {r.class_id for r in self.records}
        stored = m.get("empty_classes")
        if isinstance(stored, (list, tuple)):
            self.empty_classes = sorted(int(c) for c in stored)
        else:
            self.empty_classes = sorted(set(self.class_ids or ()) - present) if self.records else []
        rank = run.config.get("method_rank")
        self.rank = rank if isinstance(rank, int) and not isinstance(rank, bool) else UNRANKED

    @property
    def has_records(self) -> bool:
        return bool(self.records)

    def sample(self, weight: float = 1.0, group: Any = 0) -> Sample:
        return Sample(self.records, self.class_ids, weight, group, self.run.episode_hash)


def cell_stats(
    runs_by_fold: dict[int, list[RunStats]], metric: str, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """Value, interval and seed spread of one cell: the mean over folds of the mean over runs."""
    folds = sorted(runs_by_fold)
    per_fold = [np.array([r.value[metric] for r in runs_by_fold[f]]) for f in folds]
    value = float(np.mean([v.mean() for v in per_fold]))
    n_runs = sum(len(runs_by_fold[f]) for f in folds)
    # seed spread: per seed, the statistic over folds; sd across seeds that cover every fold
    by_seed: dict[Any, list[float]] = {}
    for f in folds:
        seen: dict[Any, list[float]] = {}
        for r in runs_by_fold[f]:
            seen.setdefault(r.keys["seed"], []).append(r.value[metric])
        for s, vals in seen.items():
            by_seed.setdefault(s, []).append(float(np.mean(vals)))
    full = [float(np.mean(v)) for v in by_seed.values() if len(v) == len(folds)]
    per_fold_seeds = min(len({r.keys["seed"] for r in runs_by_fold[f]}) for f in folds)
    n_seeds = len(full) if full else per_fold_seeds
    sd = float(np.std(full, ddof=1)) if len(full) > 1 else math.nan
    out: dict[str, Any] = {"value": value, "sd": sd, "n_seeds": n_seeds, "n_runs": n_runs, "n_folds": len(folds)}
    members = [r for f in folds for r in runs_by_fold[f]]
    if math.isnan(value):
        out["ci_lo"], out["ci_hi"], out["ci_method"] = math.nan, math.nan, ""
    elif all(r.has_records for r in members):
        samples = [r.sample(1.0 / (len(folds) * len(runs_by_fold[f])), f) for f in folds for r in runs_by_fold[f]]
        reps = bootstrap_replicates(samples, n_boot=n_boot, seed=seed, metric=metric)
        out["ci_lo"], out["ci_hi"] = percentile_interval(reps, level)
        out["ci_method"] = "bootstrap"
    elif len(members) == 1:
        out["ci_lo"], out["ci_hi"] = members[0].ci[metric]
        out["ci_method"] = "run file" if not math.isnan(out["ci_lo"]) else ""
    else:
        halves = []
        for f in folds:
            hs = [(r.ci[metric][1] - r.ci[metric][0]) / 2 for r in runs_by_fold[f]]
            halves.append(math.sqrt(sum(h * h for h in hs)) / len(hs))
        h = math.sqrt(sum(x * x for x in halves)) / len(halves)
        out["ci_lo"], out["ci_hi"] = value - h, value + h
        out["ci_method"] = "propagated" if not math.isnan(h) else ""
    return out


# --------------------------------------------------------------------------------------------
# rows


@dataclass
class Row:
    """One table row: the cells whose identities differ only by shot and fold."""

    key: str  # short id of the row identity
    table: tuple[str, str]  # (dataset, protocol)
    ident: dict[str, Any]  # the row identity (no shot/fold; fold-varying keys only where they split rows)
    method: str
    options: str  # canonical JSON of method_options
    train_backbone: str
    eval_backbone: str
    kind: str
    rank: int = UNRANKED
    label: str = ""  # method label, made unique within the table where identities differ
    runs: list[RunStats] = field(default_factory=list, repr=False)

    @property
    def backbone(self) -> str:
        return backbone_label(self.train_backbone, self.eval_backbone)

    def sort_key(self) -> tuple:
        return (self.rank, self.method, "" if self.options == "{}" else self.options, self.train_backbone,
                self.eval_backbone, _kind_rank(self.kind), self.label, self.key)


def _without(ident: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in ident.items() if k not in keys}


def assign_rows(stats: Sequence[RunStats]) -> tuple[dict[str, Row], list[Row]]:
    """Group runs into rows (``{row key: Row}`` in display order, and each run's row).

    Rows ignore shot and fold, and the fold-varying keys (a released checkpoint per fold), unless
    two different cells would then share a (shot, fold) position; such rows are split by the
    full identity. Labels are unique within a table wherever identities differ."""
    free = (*POSITION_KEYS, *FOLD_VARYING_KEYS)
    groups: dict[str, list[RunStats]] = {}
    for s in stats:
        loose = _without(s.ident, free)
        loose["_has"] = {k: s.ident.get(k) is not None for k in FOLD_VARYING_KEYS}
        groups.setdefault(canonical(loose), []).append(s)
    rows: dict[str, Row] = {}
    row_of: dict[int, Row] = {}
    for loose_key, members in groups.items():
        cells_at: dict[tuple, set[str]] = {}
        for s in members:
            cells_at.setdefault((s.keys["shot"], s.keys["fold"]), set()).add(s.cell)
        split = any(len(v) > 1 for v in cells_at.values())
        for s in members:
            if split:
                ident = _without(s.ident, POSITION_KEYS)
                key = short_id(canonical(ident))
            else:  # one row for the group; a fold-varying key shows its value, or "per fold"
                ident = _without(s.ident, free)
                for k in FOLD_VARYING_KEYS:
                    vals = {canonical(m.ident.get(k)) for m in members}
                    ident[k] = s.ident.get(k) if len(vals) == 1 else "per fold"
                key = short_id(loose_key)
            row = rows.get(key)
            if row is None:
                k = s.keys
                row = rows[key] = Row(key, (k["dataset"], k["protocol"]), ident, k["method"], k["options"],
                                      k["train_backbone"], k["eval_backbone"], k["kind"])
            row.rank = min(row.rank, s.rank)
            row.runs.append(s)
            row_of[id(s)] = row
    by_table: dict[tuple[str, str], list[Row]] = {}
    for row in rows.values():
        by_table.setdefault(row.table, []).append(row)
    for members in by_table.values():
        labels = disambiguate([method_label(r.method, json.loads(r.options)) + aux_label(r.ident.get("aux")) for r in members],
                              [r.ident for r in members], groups=[(r.backbone, r.kind) for r in members])
        for r, lab in zip(members, labels):
            r.label = lab
    ordered = sorted(rows.values(), key=lambda r: (r.table, r.sort_key()))
    return {r.key: r for r in ordered}, [row_of[id(s)] for s in stats]


# --------------------------------------------------------------------------------------------
# the cells frame


CELL_COLUMNS = [*CELL_KEYS[:-2], "config", "row", "label", "backbone", "shot", "fold", "metric", "value", "ci_lo", "ci_hi",
                "sd", "n_seeds", "n_runs", "n_folds", "folds", "ci_method", "episode_hash", "empty_classes", "rank"]


def compute_cells(runs: Sequence[RunResult], n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """The tidy table of every cell: fold cells and, for rows covering all the table's folds, the
    fold mean; one row per cell and metric, in display order (see the module docstring)."""
    stats = [RunStats(r) for r in runs]
    if not stats:
        return pd.DataFrame(columns=CELL_COLUMNS)
    rows, _ = assign_rows(stats)
    table_folds: dict[tuple[str, str], set[int]] = {}
    for row in rows.values():
        table_folds.setdefault(row.table, set()).update(s.keys["fold"] for s in row.runs)
    out: list[dict[str, Any]] = []
    for row in rows.values():
        readable = {k: v for k, v in zip(CELL_KEYS[:-2], (*row.table, row.method, row.options, row.train_backbone,
                                                           row.eval_backbone, row.kind))}
        by_pos: dict[int, dict[int, list[RunStats]]] = {}
        for s in row.runs:
            by_pos.setdefault(s.keys["shot"], {}).setdefault(s.keys["fold"], []).append(s)
        for shot in sorted(by_pos):
            by_fold = by_pos[shot]
            rests: dict[int, dict[str, Any]] = {}
            for fold in sorted(by_fold):
                members = by_fold[fold]
                rest = _without(split_identity(members[0].ident)[1], POSITION_KEYS)
                rests[fold] = rest
                hashes = sorted({s.run.episode_hash for s in members})
                empty = sorted({c for s in members for c in s.empty_classes})
                _emit(out, readable, row, shot, fold, {fold: members}, rest, n_boot, seed, level,
                      episode_hash=hashes[0] if len(hashes) == 1 else "", empty=json.dumps(empty))
            if set(by_fold) == table_folds[row.table]:
                empty_by = {str(f): sorted({c for s in by_fold[f] for c in s.empty_classes}) for f in sorted(by_fold)}
                _emit(out, readable, row, shot, "mean", by_fold, merge_over_folds(rests), n_boot, seed, level,
                      folds=sorted(by_fold), empty=json.dumps({f: v for f, v in empty_by.items() if v}))
    return pd.DataFrame(out, columns=CELL_COLUMNS)


def _emit(out: list[dict[str, Any]], readable: dict[str, Any], row: Row, shot: int, fold: Any,
          by_fold: dict[int, list[RunStats]], rest: dict[str, Any], n_boot: int, seed: int, level: float, *,
          episode_hash: str = "", folds: list[int] | None = None, empty: str = "") -> None:
    for metric in METRICS:
        st = cell_stats(by_fold, metric, n_boot, seed, level)
        if math.isnan(st["value"]):
            continue
        out.append({**readable, "config": canonical(rest), "row": row.key, "label": row.label, "backbone": row.backbone,
                    "shot": shot, "fold": fold, "metric": metric, **st, "folds": json.dumps(folds) if folds else "",
                    "episode_hash": episode_hash, "empty_classes": empty, "rank": row.rank})


def _kind_rank(kind: str) -> int:
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
