"""Turn a folder of run files into the tables, figures and comparisons a paper needs.

Data first: every run becomes one row of ``runs.csv`` and every scored episode one row of
``episodes.csv``; everything else is computed from those.

Cells
-----
A *cell* is one number of a paper table: (dataset, protocol, method + options, train backbone,
eval backbone, annotation kind, shot, fold), for ``miou`` and ``fbiou``. ``fold == "mean"`` is the
fold mean (the mean of the fold values, as in the papers). A cell can hold several runs (seeds);
its value is then the mean over them (never the best), and ``sd`` is their standard deviation
(ddof=1). The 95% interval of a cell is:

* one run, one fold: the bootstrap interval stored in the run file (``metrics.miou_ci``);
* otherwise (seed means, the fold mean): recomputed from the per-episode records. Each bootstrap
  replicate resamples the episodes of every run independently, *within each class* (the
  statistic is a ratio of sums per class, so classes keep their episode counts), recomputes
  every run's mIoU/FB-IoU, and applies the same mean over seeds and folds as the point value.
  The interval is the percentile interval of those replicates. It covers episode-sampling
  uncertainty only; the spread over training seeds is ``sd``.
* when some run has no records, the intervals are propagated assuming independence:
  the half-width of a mean of ``m`` values is ``sqrt(sum h_i^2) / m``.

Markdown/LaTeX cells read ``62.3 ±1.1`` (± = half the 95% interval; the exact bounds are in the
CSV files) and, for several seeds, ``62.3 ±1.1 (sd 0.8, n=3)``.
"""

from __future__ import annotations

import functools
import json
import math
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from fssbench.errors import UserError
from fssbench.results import RunResult, iter_results

METRICS: tuple[str, ...] = ("miou", "fbiou")
METRIC_NAMES = {"miou": "mIoU", "fbiou": "FB-IoU"}
ROW_KEYS: tuple[str, ...] = ("method", "options", "train_backbone", "eval_backbone", "kind")
"""What identifies a table row (``options`` is the canonical JSON of ``method_options``)."""
TABLE_KEYS: tuple[str, ...] = ("dataset", "protocol")
"""One table per dataset and protocol."""
CELL_KEYS: tuple[str, ...] = TABLE_KEYS + ROW_KEYS + ("shot", "fold")
KIND_ORDER = ("mask", "bbox", "scribble", "image", "text")
RECORD_FIELDS = ("episode_id", "class_id", "inter_fg", "union_fg", "inter_bg", "union_bg")


# --------------------------------------------------------------------------------------------
# labels


def options_json(options: Any) -> str:
    """Canonical JSON of a run's ``method_options`` ("{}" when none)."""
    return json.dumps(options or {}, sort_keys=True, separators=(",", ":"), default=str)


def options_dict(options: Any) -> dict[str, Any]:
    """Method options as a mapping, whether stored as one or as (canonical) JSON text."""
    if isinstance(options, str):
        return json.loads(options) if options else {}
    return dict(options or {})


def options_label(options: Any) -> str:
    """``aug=diffss, k=2`` from ``{"k": 2, "aug": "diffss"}`` ("" when none)."""
    options = options_dict(options)
    if not options:
        return ""
    parts = []
    for k in sorted(options):
        v = options[k]
        parts.append(f"{k}={v if isinstance(v, (str, int, float, bool)) or v is None else json.dumps(v, sort_keys=True)}")
    return ", ".join(parts)


@functools.lru_cache(maxsize=None)
def _method_defaults(method: str) -> tuple[tuple[str, str], ...]:
    """The registered method's default options (canonical JSON values); empty when not installed."""
    from fssbench.methods import get_method_class

    try:
        defaults = get_method_class(method).default_config
    except UserError:
        return ()
    return tuple((k, json.dumps(v, sort_keys=True, default=str)) for k, v in defaults.items())


def method_label(method: str, options: Any) -> str:
    """``hsnet (fg_weight=6.0)``: the method and the options that differ from its defaults.

    Results keep every resolved option (the cell identity); labels leave the defaults out so tables
    stay readable. Methods that are not installed show all their options."""
    defaults = dict(_method_defaults(str(method)))
    shown = {k: v for k, v in options_dict(options).items() if defaults.get(k) != json.dumps(v, sort_keys=True, default=str)}
    lab = options_label(shown)
    return f"{method} ({lab})" if lab else str(method)


def backbone_label(train: str, eval_: str, arrow: str = "→") -> str:
    return str(train) if train == eval_ or not eval_ else f"{train}{arrow}{eval_}"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "x"


def fold_name(fold: Any) -> str:
    return "mean" if fold == "mean" else f"fold{fold}"


# --------------------------------------------------------------------------------------------
# loading


@dataclass
class Suite:
    """Every run of a results folder, as objects and as data frames."""

    name: str
    directory: Path
    runs: list[RunResult]
    runs_df: pd.DataFrame
    _episodes_df: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def episodes_df(self) -> pd.DataFrame:
        if self._episodes_df is None:
            self._episodes_df = episodes_frame(self.runs)
        return self._episodes_df


def load_runs(directory: str | Path) -> list[RunResult]:
    directory = Path(directory)
    runs = list(iter_results(directory))  # raises UserError for a missing folder or bad file
    if not runs:
        raise UserError(f"results folder '{directory}' holds no run files; run `fssbench run SUITE` first")
    for run in runs:
        missing = [k for k in ("method", "train_backbone", "dataset", "fold", "shot") if k not in run.config]
        if missing:
            raise UserError(f"run '{run.run_id}' in '{directory}' lacks config keys {missing}; re-run it with this fssbench")
        miou = run.metrics.get("miou")
        if not isinstance(miou, (int, float)) or isinstance(miou, bool) or math.isnan(miou):
            raise UserError(f"run '{run.run_id}' in '{directory}' has no valid mIoU in its metrics; re-run it")
    return runs


def load_suite(directory: str | Path) -> Suite:
    directory = Path(directory)
    runs = load_runs(directory)
    suites = sorted({r.suite for r in runs if r.suite})
    name = suites[0] if len(suites) == 1 else directory.name
    return Suite(name=name, directory=directory, runs=runs, runs_df=runs_frame(runs))


def _flatten(prefix: str, obj: Any, out: dict[str, Any]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(obj, (list, tuple)):
        out[prefix] = json.dumps(obj, default=str)
    else:
        out[prefix] = obj


def _ci(metrics: dict[str, Any], key: str) -> tuple[float, float]:
    ci = metrics.get(key)
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(x, (int, float)) for x in ci):
        return float(ci[0]), float(ci[1])
    return math.nan, math.nan


def run_keys(run: RunResult) -> dict[str, Any]:
    """The identifying columns of a run (cell keys plus seed), normalised."""
    c = run.config
    train = str(c.get("train_backbone", ""))
    eval_ = str(c.get("eval_backbone") or train)
    return {
        "dataset": str(c.get("dataset", "")),
        "protocol": str(c.get("protocol", "")),
        "method": str(c.get("method", "")),
        "options": options_json(c.get("method_options")),
        "train_backbone": train,
        "eval_backbone": eval_,
        "kind": str(c.get("kind") or "mask"),
        "shot": int(c.get("shot", 0)),
        "fold": int(c.get("fold", 0)),
        "seed": c.get("seed"),
    }


def runs_frame(runs: Sequence[RunResult]) -> pd.DataFrame:
    """One row per run: identifying keys, flattened config, metrics, provenance."""
    rows = []
    for r in runs:
        row: dict[str, Any] = {"run_id": r.run_id, "suite": r.suite, **run_keys(r)}
        row["label"] = method_label(row["method"], r.config.get("method_options"))
        row["options_label"] = options_label(r.config.get("method_options"))
        row["backbone"] = backbone_label(row["train_backbone"], row["eval_backbone"])
        row["episode_hash"] = r.episode_hash
        cfg: dict[str, Any] = {}
        _flatten("config", {k: v for k, v in r.config.items() if k != "method_options"}, cfg)
        cfg["config.method_options"] = options_json(r.config.get("method_options"))
        row.update(cfg)
        m = r.metrics
        row["miou"] = float(m["miou"])
        row["fbiou"] = float(m["fbiou"]) if m.get("fbiou") is not None else math.nan
        row["miou_ci_lo"], row["miou_ci_hi"] = _ci(m, "miou_ci")
        row["fbiou_ci_lo"], row["fbiou_ci_hi"] = _ci(m, "fbiou_ci")
        row["n_episodes"] = m.get("n_episodes", len(r.records))
        row["n_records"] = len(r.records)
        row["class_iou"] = json.dumps(m.get("class_iou", {}), sort_keys=True)
        prov: dict[str, Any] = {}
        _flatten("provenance", r.provenance, prov)
        row.update(prov)
        rows.append(row)
    return pd.DataFrame(rows)


def episodes_frame(runs: Sequence[RunResult]) -> pd.DataFrame:
    """One row per episode per run, with the run's identifying keys and the fg IoU (percent)."""
    frames = []
    for r in runs:
        if not r.records:
            continue
        keys = run_keys(r)
        d = pd.DataFrame({k: np.fromiter((getattr(rec, k) for rec in r.records), dtype=np.int64, count=len(r.records))
                          for k in RECORD_FIELDS})
        lead = {
            "run_id": r.run_id,
            **{k: keys[k] for k in ("dataset", "protocol", "method")},
            "label": method_label(keys["method"], r.config.get("method_options")),
            **{k: keys[k] for k in ("train_backbone", "eval_backbone", "kind", "shot", "fold", "seed")},
            "episode_hash": r.episode_hash,
        }
        for i, (k, v) in enumerate(lead.items()):
            d.insert(i, k, v)
        d["iou_fg"] = 100.0 * d["inter_fg"] / np.maximum(d["union_fg"], 1)
        frames.append(d)
    if not frames:
        return pd.DataFrame(columns=["run_id", "dataset", "protocol", "method", "label", "train_backbone", "eval_backbone",
                                     "kind", "shot", "fold", "seed", "episode_hash", *RECORD_FIELDS, "iou_fg"])
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------------
# statistics


class _RunStats:
    """A run's stored metrics plus its records as arrays, with cached bootstrap replicates."""

    def __init__(self, run: RunResult) -> None:
        self.run = run
        self.keys = run_keys(run)
        m = run.metrics
        self.value = {"miou": float(m["miou"]), "fbiou": float(m["fbiou"]) if m.get("fbiou") is not None else math.nan}
        self.ci = {"miou": _ci(m, "miou_ci"), "fbiou": _ci(m, "fbiou_ci")}
        self.has_records = bool(run.records)
        self._reps: dict[tuple[int, int], dict[str, np.ndarray]] = {}

    def replicates(self, n_boot: int, seed: int) -> dict[str, np.ndarray]:
        """``n_boot`` bootstrap values of mIoU and FB-IoU (percent), episodes resampled within class."""
        key = (n_boot, seed)
        if key not in self._reps:
            n_classes = len(self.run.metrics.get("class_iou") or {}) or None
            self._reps[key] = bootstrap_replicates(self.run.records, n_boot, seed, salt=self.run.run_id, n_classes=n_classes)
        return self._reps[key]


def _arrays(records: Sequence[Any]) -> tuple[np.ndarray, ...]:
    cls = np.array([int(r.class_id) for r in records])
    ifg = np.array([float(r.inter_fg) for r in records])
    ufg = np.array([float(r.union_fg) for r in records])
    ibg = np.array([float(r.inter_bg) for r in records])
    ubg = np.array([float(r.union_bg) for r in records])
    return cls, ifg, ufg, ibg, ubg


def _ratio(i: np.ndarray | float, u: np.ndarray | float) -> np.ndarray:
    """``i / max(u, 1)``: the guard of ``fssbench.metrics``."""
    return np.asarray(i, float) / np.maximum(np.asarray(u, float), 1.0)


def bootstrap_replicates(
    records: Sequence[Any], n_boot: int, seed: int = 0, salt: str = "", n_classes: int | None = None
) -> dict[str, np.ndarray]:
    """Class-stratified bootstrap replicates of mIoU and FB-IoU (percent) for one run.

    Same algebra as ``fssbench.metrics`` (``max(union, 1)`` guards; mIoU averages over
    ``n_classes``, default the classes present, so a fold class without episodes counts 0).
    """
    rng = np.random.default_rng([int(seed), zlib.crc32(salt.encode())])
    cls, ifg, ufg, ibg, ubg = _arrays(records)
    classes = np.unique(cls)
    n_classes = max(n_classes or 0, len(classes))
    class_iou = np.empty((len(classes), n_boot))
    tot = np.zeros((4, n_boot))
    for j, c in enumerate(classes):
        idx_c = np.flatnonzero(cls == c)
        step = max(1, 2_000_000 // len(idx_c))  # bounded memory for classes with many episodes
        for b0 in range(0, n_boot, step):
            b = slice(b0, min(n_boot, b0 + step))
            draw = idx_c[rng.integers(0, len(idx_c), size=(b.stop - b.start, len(idx_c)))]
            i_fg, u_fg = ifg[draw].sum(1), ufg[draw].sum(1)
            class_iou[j, b] = _ratio(i_fg, u_fg)
            tot[0, b] += i_fg
            tot[1, b] += u_fg
            tot[2, b] += ibg[draw].sum(1)
            tot[3, b] += ubg[draw].sum(1)
    miou = class_iou.sum(axis=0) / n_classes * 100
    fbiou = (_ratio(tot[0], tot[1]) + _ratio(tot[2], tot[3])) / 2 * 100
    return {"miou": miou, "fbiou": fbiou}


def _percentile(reps: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    reps = reps[~np.isnan(reps)]
    if reps.size == 0:
        return math.nan, math.nan
    a = (1 - level) / 2 * 100
    lo, hi = np.percentile(reps, [a, 100 - a])
    return float(lo), float(hi)


def cell_stats(
    runs_by_fold: dict[int, list[_RunStats]], metric: str, n_boot: int = 1000, seed: int = 0, level: float = 0.95
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
            seen.setdefault(str(r.keys["seed"]), []).append(r.value[metric])
        for s, vals in seen.items():
            by_seed.setdefault(s, []).append(float(np.mean(vals)))
    full = [float(np.mean(v)) for v in by_seed.values() if len(v) == len(folds)]
    per_fold_seeds = min(len({str(r.keys["seed"]) for r in runs_by_fold[f]}) for f in folds)
    n_seeds = len(full) if full else per_fold_seeds
    sd = float(np.std(full, ddof=1)) if len(full) > 1 else math.nan
    out: dict[str, Any] = {"value": value, "sd": sd, "n_seeds": n_seeds, "n_runs": n_runs, "n_folds": len(folds)}
    only = runs_by_fold[folds[0]][0] if len(folds) == 1 and len(runs_by_fold[folds[0]]) == 1 else None
    if only is not None and not math.isnan(only.ci[metric][0]):
        out["ci_lo"], out["ci_hi"] = only.ci[metric]
        out["ci_method"] = "run file"
    elif all(r.has_records for f in folds for r in runs_by_fold[f]):
        reps = np.mean(
            [np.mean([r.replicates(n_boot, seed)[metric] for r in runs_by_fold[f]], axis=0) for f in folds], axis=0
        )
        out["ci_lo"], out["ci_hi"] = _percentile(reps, level)
        out["ci_method"] = "bootstrap"
    else:
        halves = []
        for f in folds:
            hs = [(r.ci[metric][1] - r.ci[metric][0]) / 2 for r in runs_by_fold[f]]
            halves.append(math.sqrt(sum(h * h for h in hs)) / len(hs))
        h = math.sqrt(sum(x * x for x in halves)) / len(halves)
        out["ci_lo"], out["ci_hi"] = value - h, value + h
        out["ci_method"] = "propagated"
    return out


UNRANKED = 10**6


def method_ranks(runs: Sequence[RunResult]) -> dict[tuple[str, str], int]:
    """``(method, options JSON) -> position in the suite's matrix`` (the order the suite's author
    listed methods: baselines first, usually). Runs written before ranks existed get ``UNRANKED``."""
    ranks: dict[tuple[str, str], int] = {}
    for r in runs:
        k = run_keys(r)
        rank = r.config.get("method_rank")
        rank = rank if isinstance(rank, int) and not isinstance(rank, bool) else UNRANKED
        key = (k["method"], k["options"])
        ranks[key] = min(rank, ranks.get(key, UNRANKED))
    return ranks


def compute_cells(runs: Sequence[RunResult], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The tidy table of every cell: fold cells and, for rows covering all the table's folds, the mean."""
    stats = [_RunStats(r) for r in runs]
    ranks = method_ranks(runs)
    groups: dict[tuple, list[_RunStats]] = {}
    for s in stats:
        groups.setdefault(tuple(s.keys[k] for k in CELL_KEYS), []).append(s)
    table_folds: dict[tuple, set[int]] = {}
    for key in groups:
        table_folds.setdefault(key[: len(TABLE_KEYS)], set()).add(key[-1])
    rows: list[dict[str, Any]] = []

    def emit(key_vals: dict[str, Any], runs_by_fold: dict[int, list[_RunStats]]) -> None:
        hashes = sorted({r.run.episode_hash for f in runs_by_fold for r in runs_by_fold[f]})
        for metric in METRICS:
            st = cell_stats(runs_by_fold, metric, n_boot, seed)
            if math.isnan(st["value"]):
                continue
            rows.append({**key_vals, "metric": metric, **st,
                         "episode_hash": hashes[0] if len(hashes) == 1 and key_vals["fold"] != "mean" else ""})

    by_row: dict[tuple, dict[int, list[_RunStats]]] = {}
    for key, members in groups.items():
        kv = dict(zip(CELL_KEYS, key))
        emit(kv, {kv["fold"]: members})
        by_row.setdefault(key[:-1], {})[kv["fold"]] = members
    for rkey, by_fold in by_row.items():
        folds = table_folds[rkey[: len(TABLE_KEYS)]]
        if set(by_fold) == folds:
            emit({**dict(zip(CELL_KEYS[:-1], rkey)), "fold": "mean", "folds": sorted(folds)}, by_fold)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["label"] = [method_label(m, json.loads(o)) for m, o in zip(df["method"], df["options"])]
    df["backbone"] = [backbone_label(t, e) for t, e in zip(df["train_backbone"], df["eval_backbone"])]
    if "folds" not in df:
        df["folds"] = None
    df["folds"] = [json.dumps(f) if isinstance(f, list) else "" for f in df["folds"]]
    df = df.assign(
        _fo=[1e9 if f == "mean" else f for f in df["fold"]],
        _rank=[ranks.get((m, o), UNRANKED) for m, o in zip(df["method"], df["options"])],
    ).sort_values(
        [*TABLE_KEYS, "_rank", "method", "options", "train_backbone", "eval_backbone", "kind", "shot", "_fo", "metric"],
        key=_sort_column,
    )
    lead = [*CELL_KEYS[:-2], "label", "backbone", "shot", "fold", "metric", "value", "ci_lo", "ci_hi", "sd",
            "n_seeds", "n_runs", "n_folds", "folds", "ci_method", "episode_hash"]
    return df[lead + [c for c in df.columns if c not in lead and c not in ("_fo", "_rank")]].reset_index(drop=True)


def _sort_column(s: pd.Series) -> pd.Series:
    """Row order: methods in the suite's order, then alphabetically (no options first); kinds in
    ANNOTATION_KINDS order."""
    if s.name == "kind":
        return s.map(_kind_rank)
    if s.name == "options":
        return s.map(lambda o: "" if o == "{}" else o)
    return s


def _kind_rank(kind: str) -> int:
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)


# --------------------------------------------------------------------------------------------
# tables


@dataclass
class Table:
    """One paper-layout table (one dataset and protocol)."""

    dataset: str
    protocol: str
    rows: list[tuple]  # ROW_KEYS tuples, in display order
    shots: list[int]
    folds: list[int]
    cells: dict[tuple, dict[str, Any]]  # (row, shot, fold|"mean", metric) -> stats

    @property
    def tag(self) -> str:
        return slug(f"{self.dataset}_{self.protocol}" if self.protocol else self.dataset)

    @property
    def title(self) -> str:
        return f"{self.dataset} ({self.protocol} protocol)" if self.protocol else self.dataset

    def columns(self) -> list[tuple[int, Any, str]]:
        """(shot, fold|"mean", metric) in display order: per shot fold mIoUs, mean mIoU, FB-IoU."""
        cols = []
        for k in self.shots:
            cols += [(k, f, "miou") for f in self.folds] + [(k, "mean", "miou"), (k, "mean", "fbiou")]
        return cols

    def get(self, row: tuple, col: tuple[int, Any, str]) -> dict[str, Any] | None:
        return self.cells.get((row, *col))

    def best(self) -> dict[tuple, set[tuple]]:
        """For each column, the rows holding the best (highest, at display precision) value."""
        out: dict[tuple, set[tuple]] = {}
        for col in self.columns():
            vals = {r: round(c["value"], 1) for r in self.rows if (c := self.get(r, col)) is not None}
            if len(vals) >= 2:
                top = max(vals.values())
                out[col] = {r for r, v in vals.items() if v == top}
        return out

    def row_labels(self, arrow: str = "→") -> list[tuple[str, str, str]]:
        return [(method_label(r[0], json.loads(r[1])), backbone_label(r[2], r[3], arrow), r[4]) for r in self.rows]

    def any_seeds(self) -> bool:
        return any(c.get("n_runs", 1) > 1 and c.get("n_seeds", 1) > 1 for c in self.cells.values())


def build_tables(cells: pd.DataFrame) -> list[Table]:
    tables = []
    if cells.empty:
        return tables
    for (ds, proto), sub in cells.groupby(list(TABLE_KEYS), sort=False):
        rows: list[tuple] = []
        for rec in sub.to_dict("records"):
            r = tuple(rec[k] for k in ROW_KEYS)
            if r not in rows:
                rows.append(r)
        shots = sorted({int(s) for s in sub["shot"]})
        folds = sorted({int(f) for f in sub["fold"] if f != "mean"})
        cmap = {}
        for rec in sub.to_dict("records"):
            cmap[(tuple(rec[k] for k in ROW_KEYS), int(rec["shot"]), rec["fold"], rec["metric"])] = rec
        tables.append(Table(str(ds), str(proto), rows, shots, folds, cmap))
    return tables


def fmt_cell(c: dict[str, Any] | None, *, latex: bool = False, bold: bool = False) -> str:
    if c is None:
        return "--" if latex else "–"
    v = f"{c['value']:.1f}"
    if bold:
        v = f"\\textbf{{{v}}}" if latex else f"**{v}**"
    half = (c["ci_hi"] - c["ci_lo"]) / 2 if not math.isnan(c.get("ci_lo", math.nan)) else math.nan
    extra = f"±{half:.1f}" if not math.isnan(half) else ""
    if c.get("n_runs", 1) > 1 and not math.isnan(c.get("sd", math.nan)):
        extra += f" (sd {c['sd']:.1f}, n={c['n_seeds']})"
    if not extra:
        return v
    if latex:
        extra = extra.replace("±", "$\\pm$")
        return f"{v}\\,{{\\scriptsize {extra}}}"
    return f"{v} {extra}"


def _shot_name(k: int) -> str:
    return f"{k}-shot"


def table_markdown(t: Table) -> str:
    best = t.best()
    head = ["Method", "Backbone", "Kind"]
    for k, f, m in t.columns():
        head.append(f"{_shot_name(k)} {fold_name(f) if m == 'miou' else 'FB-IoU'}")
    lines = [f"### {t.title}", "", "| " + " | ".join(head) + " |", "|" + "|".join([":--"] * 3 + ["--:"] * (len(head) - 3)) + "|"]
    for r, labels in zip(t.rows, t.row_labels()):
        vals = [fmt_cell(t.get(r, col), bold=r in best.get(col, set())) for col in t.columns()]
        lines.append("| " + " | ".join([*labels, *vals]) + " |")
    lines += ["", _table_note(t), ""]
    return "\n".join(lines)


def _table_note(t: Table) -> str:
    note = (
        "mIoU per fold, mean = mean of the fold mIoUs, FB-IoU = mean over folds (percent). "
        "± = half of the 95% interval (single runs: the run's class-stratified bootstrap; means: "
        "recomputed by resampling each fold's episodes within class). Best per column in bold."
    )
    if t.any_seeds():
        note += " Cells with (sd s, n=N): mean over N seeds, sd = std across seeds; never best-of-N."
    return note


def _tex(s: str) -> str:
    rep = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
           "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(rep.get(ch, ch) for ch in s).replace("→", r"$\rightarrow$")


def table_latex(t: Table) -> str:
    best = t.best()
    per = len(t.folds) + 2
    lines = [
        "% generated by fssbench report; requires \\usepackage{booktabs}",
        "\\begin{table}[t]",
        "\\centering",
        "\\setlength{\\tabcolsep}{3pt}",
        f"\\caption{{{_tex(t.title)}: mIoU per fold, mean over folds and FB-IoU (\\%), $\\pm$ half the 95\\% interval.}}",
        f"\\label{{tab:{t.tag}}}",
        "\\begin{tabular}{lll" + ("r" * per) * len(t.shots) + "}",
        "\\toprule",
    ]
    top = " & ".join(["", "", ""] + [f"\\multicolumn{{{per}}}{{c}}{{{_shot_name(k)}}}" for k in t.shots]) + " \\\\"
    rules = " ".join(f"\\cmidrule(lr){{{4 + i * per}-{3 + (i + 1) * per}}}" for i in range(len(t.shots)))
    sub = ["Method", "Backbone", "Kind"]
    for _ in t.shots:
        sub += [f"fold{f}" for f in t.folds] + ["Mean", "FB-IoU"]
    lines += [top, rules, " & ".join(sub) + " \\\\", "\\midrule"]
    for r, labels in zip(t.rows, t.row_labels()):
        vals = [fmt_cell(t.get(r, col), latex=True, bold=r in best.get(col, set())) for col in t.columns()]
        lines.append(" & ".join([_tex(x) for x in labels] + vals) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(lines)


def table_frame(t: Table) -> pd.DataFrame:
    """The table as a wide CSV: value, lower and upper 95% bound (and seed sd/n) per column."""
    seeds = t.any_seeds()
    out = []
    for r, labels in zip(t.rows, t.row_labels()):
        row: dict[str, Any] = {
            "dataset": t.dataset, "protocol": t.protocol, "method": r[0], "options": options_label(r[1]),
            "train_backbone": r[2], "eval_backbone": r[3], "backbone": labels[1], "kind": r[4],
        }
        for col in t.columns():
            k, f, m = col
            name = f"{k}shot_{fold_name(f)}_{m}" if m == "miou" else f"{k}shot_{m}"
            c = t.get(r, col)
            row[name] = round(c["value"], 4) if c else None
            row[f"{name}_lo"] = round(c["ci_lo"], 4) if c else None
            row[f"{name}_hi"] = round(c["ci_hi"], 4) if c else None
            if seeds:
                row[f"{name}_sd"] = round(c["sd"], 4) if c and not math.isnan(c["sd"]) else None
                row[f"{name}_n_seeds"] = c["n_seeds"] if c else None
        out.append(row)
    return pd.DataFrame(out)


# --------------------------------------------------------------------------------------------
# paired comparisons


def resolve_reference(labels: Sequence[str], methods: Sequence[str], reference: str | None) -> str:
    """The reference row label: ``reference`` matched as a label, then as a method name; else the first."""
    if reference is None:
        return labels[0]
    if reference in labels:
        return reference
    hits = [lab for lab, m in zip(labels, methods) if m == reference]
    if hits:
        return hits[0]
    raise UserError(f"reference '{reference}' is not a method of these results; choose one of: {', '.join(dict.fromkeys(labels))}")


def paired_comparisons(
    runs: Sequence[RunResult], reference: str | None = None, n_boot: int = 1000, seed: int = 0, n_perm: int = 10000
) -> pd.DataFrame:
    """Δ mIoU of every method against the reference on identical episodes (same episode hash),
    with the paired-bootstrap interval and Holm-adjusted p-values (per dataset and protocol)."""
    from fssbench.metrics import holm, paired_test

    cols = ["dataset", "protocol", "method", "reference", "backbone", "kind", "shot", "fold", "seed", "episode_hash",
            "n", "delta_miou", "ci_lo", "ci_hi", "p_value", "p_holm", "significant"]
    info = []
    for r in runs:
        k = run_keys(r)
        info.append((r, k, method_label(k["method"], json.loads(k["options"]))))
    ranks = method_ranks(runs)

    def ordered(members: list) -> tuple[list[str], list[str]]:
        """Labels (and their method names) in table order: the suite's order, then method, then
        options (none first); the first is the default reference."""
        by = {
            lab: (ranks.get((k["method"], k["options"]), UNRANKED), k["method"], "" if k["options"] == "{}" else k["options"])
            for _, k, lab in members
        }
        labs = sorted(by, key=lambda lab: by[lab])
        return labs, [by[lab][1] for lab in labs]

    all_labels, all_methods = ordered(info)
    if reference is not None:
        resolve_reference(all_labels, all_methods, reference)  # unknown name -> UserError
    out = []
    tables: dict[tuple, list] = {}
    for r, k, lab in info:
        if r.records:
            tables.setdefault((k["dataset"], k["protocol"]), []).append((r, k, lab))
    for (ds, proto), members in tables.items():
        labels, methods = ordered(members)
        try:
            ref = resolve_reference(labels, methods, reference)
        except UserError:
            continue
        units: dict[tuple, dict[str, RunResult]] = {}
        for r, k, lab in members:
            u = (k["train_backbone"], k["eval_backbone"], k["kind"], k["shot"], k["fold"], str(k["seed"]), r.episode_hash)
            units.setdefault(u, {}).setdefault(lab, r)
        rows = []
        for u, by_label in sorted(units.items(), key=lambda x: tuple(str(v) for v in x[0])):
            if ref not in by_label:
                continue
            for lab in labels:
                if lab == ref or lab not in by_label:
                    continue
                # metrics.paired_test: delta = metric(b) - metric(a) -> method minus reference
                try:
                    res = paired_test(by_label[ref].records, by_label[lab].records, n_boot=n_boot, n_perm=n_perm, seed=seed)
                except ValueError:  # same hash but records disagree (e.g. a partial run): not pairable
                    continue
                rows.append({
                    "dataset": ds, "protocol": proto, "method": lab, "reference": ref,
                    "backbone": backbone_label(u[0], u[1]), "kind": u[2], "shot": u[3], "fold": u[4], "seed": u[5],
                    "episode_hash": u[6], "n": res.n, "delta_miou": res.delta, "ci_lo": res.ci_low, "ci_hi": res.ci_high,
                    "p_value": res.p_value,
                })
        if rows:
            adj = holm([x["p_value"] for x in rows])
            for x, p in zip(rows, adj):
                x["p_holm"] = float(p)
                x["significant"] = bool(p < 0.05)
            out += rows
    return pd.DataFrame(out, columns=cols)


def paired_markdown(df: pd.DataFrame) -> str:
    lines = []
    for (ds, proto), sub in df.groupby(["dataset", "protocol"], sort=False):
        ref = sub["reference"].iloc[0]
        lines += [f"### {ds} ({proto} protocol): Δ mIoU vs {ref}", "",
                  "| Method | Backbone | Kind | Shot | Fold | Seed | n | Δ mIoU | 95% CI | p | p (Holm) |",
                  "|:--|:--|:--|--:|--:|--:|--:|--:|:--|--:|--:|"]
        for x in sub.to_dict("records"):
            sig = " *" if x["significant"] else ""
            lines.append(
                f"| {x['method']} | {x['backbone']} | {x['kind']} | {x['shot']} | {x['fold']} | {x['seed']} | {x['n']} | "
                f"{x['delta_miou']:+.2f}{sig} | [{x['ci_lo']:+.2f}, {x['ci_hi']:+.2f}] | {_p(x['p_value'])} | {_p(x['p_holm'])} |"
            )
        lines += ["", "Paired on identical episodes (same episode hash and seed). Δ = method − reference, in mIoU "
                  "points; CI: paired bootstrap; p-values Holm-adjusted over all comparisons of this table "
                  "(* = p_Holm < 0.05).", ""]
    return "\n".join(lines)


def _p(p: float) -> str:
    return "<0.001" if p < 1e-3 else f"{p:.3f}"


# --------------------------------------------------------------------------------------------
# figures


def _short_labels(t: Table) -> list[str]:
    labs = t.row_labels()
    vary = [len({x[i] for x in labs}) > 1 for i in range(3)]
    vary[0] = True
    return [" · ".join(x[i] for i in range(3) if vary[i]) for x in labs]


def _save(fig: Any, out: Path, stem: str) -> list[Path]:
    paths = []
    for ext in ("png", "pdf"):
        p = out / f"{stem}.{ext}"
        fig.savefig(p, dpi=150, bbox_inches="tight")
        paths.append(p)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    return plt, sns


def figure_folds(t: Table, shot: int, out: Path) -> list[Path]:
    """Grouped bars: mIoU per fold (and the mean) per method, with 95% interval error bars."""
    plt, sns = _plt()
    groups = [*t.folds, "mean"]
    labels = _short_labels(t)
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
            err[0].append(max(c["value"] - c["ci_lo"], 0) if not math.isnan(c["ci_lo"]) else 0)
            err[1].append(max(c["ci_hi"] - c["value"], 0) if not math.isnan(c["ci_hi"]) else 0)
        if xs:
            ax.bar(xs, ys, width=width * 0.95, yerr=err, capsize=2, color=colors[i], label=labels[i])
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([fold_name(f) for f in groups])
    ax.set_ylabel("mIoU (%)")
    ax.set_title(f"{t.title}, {shot}-shot")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _save(fig, out, f"fig_folds_{t.tag}_{shot}shot")


def figure_kshot(t: Table, out: Path) -> list[Path]:
    """mIoU (fold mean) against k, one line per method, 95% interval bands."""
    plt, sns = _plt()
    labels = _short_labels(t)
    colors = sns.color_palette("tab10", n_colors=max(len(t.rows), 1))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for i, r in enumerate(t.rows):
        pts = [(k, c) for k in t.shots if (c := t.get(r, (k, "mean", "miou"))) is not None]
        if not pts:
            continue
        ks = [k for k, _ in pts]
        ax.plot(ks, [c["value"] for _, c in pts], marker="o", color=colors[i], label=labels[i])
        ax.fill_between(ks, [c["ci_lo"] for _, c in pts], [c["ci_hi"] for _, c in pts], color=colors[i], alpha=0.2)
    ax.set_xticks(t.shots)
    ax.set_xlabel("shots (k)")
    ax.set_ylabel("mIoU, mean over folds (%)")
    ax.set_title(t.title)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _save(fig, out, f"fig_kshot_{t.tag}")


def kshot_supported(t: Table) -> bool:
    """Several shots, and some row has a fold mean for at least two of them."""
    return len(t.shots) > 1 and any(
        sum(t.get(r, (k, "mean", "miou")) is not None for k in t.shots) >= 2 for r in t.rows
    )


def stitching_groups(t: Table, shot: int) -> dict[tuple[str, str, str], list[tuple]]:
    """(method, options, kind) -> rows, for methods with a fold-mean mIoU at ``shot`` on several
    eval backbones of one train backbone."""
    by: dict[tuple[str, str, str], list[tuple]] = {}
    for r in t.rows:
        if t.get(r, (shot, "mean", "miou")) is not None:
            by.setdefault((r[0], r[1], r[4]), []).append(r)
    keep = {}
    for key, rows in by.items():
        evals: dict[str, set[str]] = {}
        for r in rows:
            evals.setdefault(r[2], set()).add(r[3])
        if any(len(v) > 1 for v in evals.values()):
            keep[key] = rows
    return keep


def figure_stitching(t: Table, shot: int, out: Path) -> list[Path]:
    """Heatmap of mIoU (fold mean; fold value when a table has one fold): train × eval backbone."""
    plt, sns = _plt()
    groups = stitching_groups(t, shot)
    n = len(groups)
    fig, axes = plt.subplots(1, n, figsize=(3.8 * n + 0.5, 3.2), squeeze=False)
    for ax, ((method, opts, kind), rows) in zip(axes[0], groups.items()):
        trains = list(dict.fromkeys(r[2] for r in rows))
        evals = list(dict.fromkeys(r[3] for r in rows))
        grid = pd.DataFrame(np.nan, index=trains, columns=evals)
        for r in rows:
            c = t.get(r, (shot, "mean", "miou"))
            if c is not None:
                grid.loc[r[2], r[3]] = c["value"]
        sns.heatmap(grid, annot=True, fmt=".1f", cmap="viridis", ax=ax, cbar=True)
        ax.set_xlabel("eval backbone")
        ax.set_ylabel("train backbone")
        ax.set_title(f"{method_label(method, json.loads(opts))} · {kind}", fontsize="small")
    fig.suptitle(f"{t.title}, {shot}-shot: backbone stitching (mIoU)")
    return _save(fig, out, f"fig_stitching_{t.tag}_{shot}shot")


# --------------------------------------------------------------------------------------------
# the report


@dataclass
class Written:
    path: Path
    what: str


def write_report(
    results_dir: str | Path,
    out_dir: str | Path,
    *,
    reference: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    n_perm: int = 10000,
    figures: bool = True,
) -> tuple[Suite, list[Table], list[Written]]:
    """Write everything ``fssbench report`` writes; return the suite, its tables and the files."""
    from fssbench.episodes import atomic_write_text

    suite = load_suite(results_dir)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create report folder '{out}' ({exc.strerror})") from None
    written: list[Written] = []

    def text(name: str, body: str, what: str) -> None:
        written.append(Written(atomic_write_text(out / name, body), what))

    def csv(name: str, df: pd.DataFrame, what: str) -> None:
        text(name, df.to_csv(index=False), what)

    csv("runs.csv", suite.runs_df, f"one row per run ({len(suite.runs_df)} runs): keys, flattened config, metrics, provenance")
    ep = suite.episodes_df
    csv("episodes.csv", ep, f"one row per scored episode per run ({len(ep)} rows): intersections/unions, fg IoU")
    cells = compute_cells(suite.runs, n_boot=n_boot, seed=seed)
    csv("cells.csv", cells, "every table cell in long form: value, 95% interval, seed sd, interval method")
    tables = build_tables(cells)
    for t in tables:
        text(f"table_{t.tag}.md", table_markdown(t), f"{t.title}: paper-layout table (Markdown)")
        text(f"table_{t.tag}.tex", table_latex(t), f"{t.title}: paper-layout table (LaTeX, booktabs)")
        csv(f"table_{t.tag}.csv", table_frame(t), f"{t.title}: paper-layout table (CSV, value with _lo/_hi bounds)")

    paired = paired_comparisons(suite.runs, reference=reference, n_boot=n_boot, seed=seed, n_perm=n_perm)
    if not paired.empty:
        text("paired.md", paired_markdown(paired), "paired Δ mIoU vs the reference on identical episodes, Holm-adjusted")
        csv("paired.csv", paired, "paired comparisons (CSV)")

    if figures:
        for t in tables:
            for k in t.shots:
                for p in figure_folds(t, k, out):
                    written.append(Written(p, f"{t.title}, {k}-shot: mIoU per fold with 95% intervals"))
            if kshot_supported(t):
                for p in figure_kshot(t, out):
                    written.append(Written(p, f"{t.title}: mIoU vs shots with 95% bands"))
            for k in t.shots:
                if stitching_groups(t, k):
                    for p in figure_stitching(t, k, out):
                        written.append(Written(p, f"{t.title}, {k}-shot: train × eval backbone heatmap"))

    lines = [f"# Report: {suite.name}", "", f"Source: `{suite.directory}` ({len(suite.runs)} runs).", ""]
    for t in tables:
        lines += [table_markdown(t), ""]
    if not paired.empty:
        lines += ["## Paired comparisons", "", paired_markdown(paired), ""]
    else:
        lines += ["No paired comparisons: no two methods share an episode list (hash) in a table.", ""]
    lines += ["## Files", ""]
    lines += [f"- [`{w.path.name}`]({w.path.name}): {w.what}" for w in written]
    lines += ["", "Intervals: see the module docstring of `fssbench/report.py` (class-stratified bootstrap; the "
              "fold mean's interval resamples every fold's episodes within class and averages).", ""]
    idx = atomic_write_text(out / "index.md", "\n".join(lines))
    written.append(Written(idx, "this index"))
    return suite, tables, written


def summary_table(tables: Iterable[Table]) -> Any:
    """A rich table: per row and shot, mean mIoU and FB-IoU with 95% intervals."""
    from rich.table import Table as RichTable

    tables = list(tables)
    shots = sorted({k for t in tables for k in t.shots})
    rt = RichTable(title="fssbench report", show_lines=False)
    for name in ("Dataset", "Method", "Backbone", "Kind"):
        rt.add_column(name)
    for k in shots:
        rt.add_column(f"{k}-shot mIoU", justify="right")
        rt.add_column(f"{k}-shot FB-IoU", justify="right")
    for t in tables:
        best = t.best()
        for r, labels in zip(t.rows, t.row_labels()):
            vals = []
            for k in shots:
                for m in ("miou", "fbiou"):
                    c = t.get(r, (k, "mean", m)) if k in t.shots else None
                    s = fmt_cell(c)
                    vals.append(f"[bold]{s}[/]" if r in best.get((k, "mean", m), set()) else s)
            rt.add_row(t.title, *labels, *vals)
    return rt
