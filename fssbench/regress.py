"""Regression gate: compare a suite's results with a stored baseline, cell by cell.

A cell is one :func:`fssbench.report.cell_identity` (the run config minus seeds and bookkeeping
keys: dataset and its root and options, protocol and its settings, episode count, method and all
its options, backbones, kind, supports, checkpoint, profile, ...) at one shot and fold, with
``fold`` an integer or ``"mean"`` (the fold mean). Values are computed exactly as in ``fssbench
report`` (several seeds: their mean). For each cell of the baseline and each metric (``miou``,
``fbiou``) the gate fails when ``baseline - current > tolerance``, and when the cell is absent
from the results. Improvements and new cells are reported, never fail.

Baseline file (``fssbench.baseline/2``)::

    {
      "format": "fssbench.baseline/2",
      "suite": "pascal_hsnet",
      "tolerance": 1.0,                      # or {"default": 1.0, "miou": 1.0, "fbiou": 1.5}
      "cells": [
        {"dataset": "pascal", "protocol": "hsnet", "method": "hsnet", "options": {"fg_weight": 6.0, ...},
         "train_backbone": "resnet50", "eval_backbone": "resnet50", "kind": "mask",
         "shot": 1, "fold": 0,               # or "mean" (then "folds": [0, 1, 2, 3])
         "config": {"episodes": 1000, "profile": "full", "supports": "own", ...},  # the rest of the identity
         "label": "hsnet (fg_weight=6.0)",   # how the report names the row (not part of the identity)
         "miou": 64.1, "fbiou": 76.0, "miou_ci": [62.9, 65.3], "fbiou_ci": [75.2, 76.8],
         "n_runs": 1, "n_seeds": 1, "episode_hash": "…",
         "tolerance": {"miou": 0.5}}         # optional, per cell (a number applies to both metrics)
      ]
    }

The readable fields and ``config`` together are the cell's identity; in a fold mean, a
``config`` value that differs between folds (a released checkpoint per fold) is
``{"by_fold": {"0": …, "1": …}}``. Format 1 keyed cells by the readable fields only; a format-1
file is only read by ``--update`` (which keeps its tolerances) and must be rewritten.

Tolerance of a (cell, metric), most specific first: the cell's ``tolerance`` (for that metric,
or a number) > the file's per-metric ``tolerance[metric]`` > ``--tolerance`` > the file's
default (``tolerance`` as a number, or ``tolerance["default"]``) > 1.0 point.

When both the baseline and the current cell carry a 95% interval, the drop's interval is
approximated assuming independence (``Δ ± sqrt(h_base² + h_cur²)``) and shown as "CI excl. 0";
informative only, it never changes the exit code.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fssbench.errors import UserError
from fssbench.report import (
    CELL_KEYS,
    METRIC_NAMES,
    METRICS,
    backbone_label,
    compute_cells,
    fold_name,
    join_identity,
    load_runs,
    method_label,
    options_dict,
    options_json,
)
from fssbench.report.identity import POSITION_KEYS, canonical

BASELINE_FORMAT = "fssbench.baseline/2"
LEGACY_FORMATS = ("fssbench.baseline/1",)
DEFAULT_TOLERANCE = 1.0
_KEY_FIELDS = ("dataset", "protocol", "method", "options", "train_backbone", "eval_backbone", "kind", "shot", "fold")


def _readable(cell: dict[str, Any]) -> dict[str, Any]:
    train = str(cell["train_backbone"])
    return {
        "dataset": str(cell.get("dataset", "")),
        "protocol": str(cell.get("protocol", "")),
        "method": str(cell["method"]),
        "options": options_dict(cell.get("options")),
        "train_backbone": train,
        "eval_backbone": str(cell.get("eval_backbone") or train),
        "kind": str(cell.get("kind") or "mask"),
    }


def _fold(cell: dict[str, Any]) -> Any:
    return "mean" if cell["fold"] == "mean" else int(cell["fold"])


def cell_key(cell: dict[str, Any]) -> tuple:
    """Hashable identity of a cell (baseline dict or cells-frame record): ``(identity JSON without
    shot and fold, shot, fold)``; the identity joins the readable fields and ``config``."""
    config = cell.get("config") or {}
    if isinstance(config, str):
        config = json.loads(config)
    if not isinstance(config, dict):
        raise ValueError("config must be an object")
    ident = join_identity(_readable(cell), {k: v for k, v in config.items() if k not in POSITION_KEYS})
    return (canonical(ident), int(cell["shot"]), _fold(cell))


def legacy_key(cell: dict[str, Any]) -> tuple:
    """The format-1 key: readable fields only (used to carry tolerances over on ``--update``)."""
    r = _readable(cell)
    return (*(r[k] if k != "options" else options_json(r[k]) for k in _KEY_FIELDS[:-2]), int(cell["shot"]), _fold(cell))


@functools.lru_cache(maxsize=4096)
def _identity(text: str) -> dict[str, Any]:
    return json.loads(text)


def where_label(key: tuple) -> str:
    """``pascal/hsnet``: a cell's dataset and protocol."""
    ident = _identity(key[0])
    ds, proto = ident.get("dataset", ""), ident.get("protocol", "")
    return f"{ds}/{proto}" if proto else ds


def describe(key: tuple, label: str | None = None) -> str:
    """``hsnet (aug=x) resnet50 mask pascal/hsnet 1-shot fold0`` (``label``: the report's row
    label, which names what tells rows apart; default: the method and its non-default options)."""
    ident = _identity(key[0])
    lab = label or method_label(ident.get("method", ""), ident.get("method_options", {}))
    back = backbone_label(ident.get("train_backbone", ""), ident.get("eval_backbone", ""))
    return f"{lab} {back} {ident.get('kind', 'mask')} {where_label(key)} {key[1]}-shot {fold_name(key[2])}"


# --------------------------------------------------------------------------------------------
# current cells


def current_cells(results_dir: str | Path, n_boot: int = 1000, seed: int = 0) -> tuple[str, dict[tuple, dict[str, Any]]]:
    """The suite name and ``{cell_key: baseline-style cell}`` of a results folder (support-reliance
    controls included: they are cells of their own, ``supports`` tells them apart)."""
    runs = load_runs(results_dir)
    suites = sorted({r.suite for r in runs if r.suite})
    suite = suites[0] if len(suites) == 1 else Path(results_dir).name
    return suite, cells_from_frame(compute_cells(runs, n_boot=n_boot, seed=seed))


_ORDER = [*_KEY_FIELDS, "config", "label", "folds", "miou", "miou_ci", "fbiou", "fbiou_ci", "n_runs", "n_seeds", "episode_hash"]


def cells_from_frame(df: pd.DataFrame) -> dict[tuple, dict[str, Any]]:
    out: dict[tuple, dict[str, Any]] = {}
    for rec in df.to_dict("records"):
        key = cell_key(rec)
        cell = out.get(key)
        if cell is None:
            cell = {**_readable(rec), "shot": key[1], "fold": key[2], "config": json.loads(rec["config"] or "{}"),
                    "label": rec["label"]}
            if key[2] == "mean" and rec.get("folds"):
                cell["folds"] = json.loads(rec["folds"])
            cell["n_runs"] = int(rec["n_runs"])
            cell["n_seeds"] = int(rec["n_seeds"])
            cell["episode_hash"] = rec.get("episode_hash") or None
            out[key] = cell
        m = rec["metric"]
        cell[m] = _r(rec["value"])
        if not (math.isnan(rec["ci_lo"]) or math.isnan(rec["ci_hi"])):
            cell[f"{m}_ci"] = [_r(rec["ci_lo"]), _r(rec["ci_hi"])]
    return {k: {f: c[f] for f in _ORDER if f in c} for k, c in out.items()}


def _r(x: float) -> float:
    return round(float(x), 4)


# --------------------------------------------------------------------------------------------
# baseline file


def _bad(path: Path, why: str) -> UserError:
    return UserError(f"baseline '{path}' is invalid ({why}); fix it or rewrite it with `fssbench regress RESULTS --baseline {path} --update`")


def _check_tolerance(path: Path, tol: Any, where: str, allow_default: bool) -> None:
    if tol is None or (isinstance(tol, (int, float)) and not isinstance(tol, bool) and tol >= 0):
        return
    if isinstance(tol, dict):
        allowed = set(METRICS) | ({"default"} if allow_default else set())
        for k, v in tol.items():
            if k not in allowed:
                raise _bad(path, f"{where} tolerance has unknown key '{k}' (allowed: {', '.join(sorted(allowed))})")
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise _bad(path, f"{where} tolerance '{k}' must be a non-negative number")
        return
    raise _bad(path, f"{where} tolerance must be a non-negative number or an object of them")


def load_baseline(path: str | Path, *, allow_legacy: bool = False) -> dict[str, Any]:
    """Read and validate a baseline file; any problem is one ``UserError`` line.

    ``allow_legacy``: also accept a format-1 file (``--update`` reads its tolerances); comparing
    against one is refused, its cells lack what now identifies a cell."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"baseline '{path}' does not exist; create it with `fssbench regress RESULTS --baseline {path} --update`")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"baseline '{path}' is unreadable ({exc})") from None
    except json.JSONDecodeError as exc:
        raise _bad(path, f"not JSON: {exc.msg} at line {exc.lineno}") from None
    fmt = doc.get("format") if isinstance(doc, dict) else None
    if fmt in LEGACY_FORMATS and not allow_legacy:
        raise UserError(f"baseline '{path}' is {fmt}, whose cells lack the configuration that now identifies a cell; "
                        f"rewrite it with `fssbench regress RESULTS --baseline {path} --update` (tolerances are kept)")
    if fmt != BASELINE_FORMAT and fmt not in LEGACY_FORMATS:
        raise _bad(path, f"expected \"format\": \"{BASELINE_FORMAT}\"")
    legacy = fmt in LEGACY_FORMATS
    cells = doc.get("cells")
    if not isinstance(cells, list):
        raise _bad(path, "\"cells\" must be a list")
    _check_tolerance(path, doc.get("tolerance"), "file", allow_default=True)
    seen = set()
    for i, c in enumerate(cells):
        if not isinstance(c, dict):
            raise _bad(path, f"cell {i} is not an object")
        missing = [k for k in ("method", "train_backbone", "shot", "fold") if k not in c]
        if missing:
            raise _bad(path, f"cell {i} lacks {', '.join(missing)}")
        try:
            key = cell_key(c)
            seen_key = legacy_key(c) if legacy else key
        except (TypeError, ValueError) as exc:
            raise _bad(path, f"cell {i}: {exc}") from None
        if seen_key in seen:
            raise _bad(path, f"cell {i} ({describe(key, c.get('label'))}) appears twice")
        seen.add(seen_key)
        vals = [m for m in METRICS if c.get(m) is not None]
        if not vals:
            raise _bad(path, f"cell {i} ({describe(key)}) has neither miou nor fbiou")
        for m in vals:
            if not isinstance(c[m], (int, float)) or isinstance(c[m], bool):
                raise _bad(path, f"cell {i} ({describe(key)}) {m} is not a number")
        _check_tolerance(path, c.get("tolerance"), f"cell {i}", allow_default=False)
    return doc


def tolerance_for(doc: dict[str, Any], cell: dict[str, Any], metric: str, cli: float | None) -> float:
    ct = cell.get("tolerance")
    if isinstance(ct, (int, float)):
        return float(ct)
    if isinstance(ct, dict) and metric in ct:
        return float(ct[metric])
    ft = doc.get("tolerance")
    if isinstance(ft, dict) and metric in ft:
        return float(ft[metric])
    if cli is not None:
        return float(cli)
    if isinstance(ft, (int, float)):
        return float(ft)
    if isinstance(ft, dict) and "default" in ft:
        return float(ft["default"])
    return DEFAULT_TOLERANCE


def build_baseline(
    suite: str, current: dict[tuple, dict[str, Any]], previous: dict[str, Any] | None, tolerance: float | None
) -> dict[str, Any]:
    """A baseline document from the current cells, keeping the previous file's tolerances."""
    prev_tol = previous.get("tolerance") if previous else None
    if tolerance is None:
        tol: Any = prev_tol if prev_tol is not None else DEFAULT_TOLERANCE
    elif isinstance(prev_tol, dict) and set(prev_tol) - {"default"}:
        tol = {**prev_tol, "default": float(tolerance)}
    else:
        tol = float(tolerance)
    legacy = bool(previous) and previous.get("format") in LEGACY_FORMATS
    keyf = legacy_key if legacy else cell_key
    prev_cells = {keyf(c): c for c in previous.get("cells", [])} if previous else {}
    counts: dict[tuple, int] = {}
    for c in current.values():
        counts[keyf(c)] = counts.get(keyf(c), 0) + 1
    cells = []
    for key in sorted(current, key=_sort_key):
        cell = dict(current[key])
        k = keyf(cell)
        old = prev_cells.get(k) if counts[k] == 1 else None  # a format-1 cell that now splits: no carry-over
        if old is not None and "tolerance" in old:
            cell["tolerance"] = old["tolerance"]
        cells.append(cell)
    return {"format": BASELINE_FORMAT, "suite": suite, "tolerance": tol, "cells": cells}


def _sort_key(key: tuple) -> tuple:
    """Readable fields first (dataset, protocol, method, ...), then the rest of the identity, shot, fold."""
    ident = _identity(key[0])
    head = tuple(canonical(ident.get("method_options" if k == "options" else k)) for k in _KEY_FIELDS[:-2])
    return (*head, key[0], key[1], 1e9 if key[2] == "mean" else key[2])


def write_baseline(path: str | Path, doc: dict[str, Any]) -> Path:
    from fssbench.episodes import atomic_write_text

    try:
        return atomic_write_text(Path(path), json.dumps(doc, indent=1) + "\n")
    except OSError as exc:
        raise UserError(f"cannot write baseline '{path}' ({exc.strerror or exc})") from None


# --------------------------------------------------------------------------------------------
# comparison


@dataclass
class Check:
    key: tuple
    metric: str
    baseline: float
    current: float | None
    tolerance: float
    status: str  # "ok" | "improved" | "regressed" | "missing"
    ci_excludes_zero: bool | None = None
    note: str = ""
    label: str = ""  # the report's row label (names what tells rows apart)

    @property
    def delta(self) -> float | None:
        return None if self.current is None else self.current - self.baseline

    def line(self) -> str:
        name = f"{describe(self.key, self.label)} {METRIC_NAMES[self.metric]}"
        if self.status == "missing":
            return f"MISSING: {name}: in the baseline ({self.baseline:.2f}) but not in the results"
        d = self.delta or 0.0
        verb = "dropped" if d < 0 else "rose"
        return (f"{self.status.upper()}: {name} {verb} {abs(d):.2f} ({self.baseline:.2f} -> {self.current:.2f}), "
                f"tolerance {self.tolerance:.2f}")


@dataclass
class Comparison:
    checks: list[Check]
    new_cells: list[tuple]
    labels: dict[tuple, str] = field(default_factory=dict)  # cell key -> the report's row label

    def describe(self, key: tuple) -> str:
        return describe(key, self.labels.get(key))

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status in ("regressed", "missing")]

    @property
    def missing_cells(self) -> list[tuple]:
        return list(dict.fromkeys(c.key for c in self.checks if c.status == "missing"))

    @property
    def ok(self) -> bool:
        return not self.failures


def compare(doc: dict[str, Any], current: dict[tuple, dict[str, Any]], tolerance: float | None = None) -> Comparison:
    if doc.get("format") in LEGACY_FORMATS:
        raise UserError(f"baseline is {doc.get('format')}: rewrite it with `fssbench regress RESULTS --baseline FILE --update`")
    checks: list[Check] = []
    base_keys = set()
    labels: dict[tuple, str] = {k: str(c.get("label") or "") for k, c in current.items()}
    for cell in doc["cells"]:
        key = cell_key(cell)
        base_keys.add(key)
        cur = current.get(key)
        label = labels.get(key) or str(cell.get("label") or "")
        labels[key] = label
        for m in METRICS:
            if cell.get(m) is None:
                continue
            tol = tolerance_for(doc, cell, m, tolerance)
            base = float(cell[m])
            if cur is None or cur.get(m) is None:
                checks.append(Check(key, m, base, None, tol, "missing", label=label))
                continue
            val = float(cur[m])
            d = val - base
            status = "regressed" if -d > tol + 1e-9 else ("improved" if d > 0 else "ok")
            notes = []
            if key[-1] == "mean" and cell.get("folds") and cur.get("folds") and list(cell["folds"]) != list(cur["folds"]):
                notes.append(f"folds {cell['folds']} -> {cur['folds']}")
            if cell.get("episode_hash") and cur.get("episode_hash") and cell["episode_hash"] != cur["episode_hash"]:
                notes.append("different episodes")
            checks.append(Check(key, m, base, val, tol, status, _ci_excludes_zero(cell, cur, m, d), "; ".join(notes), label))
    new = sorted((k for k in current if k not in base_keys), key=_sort_key)
    return Comparison(checks, new, labels)


def _ci_excludes_zero(base: dict[str, Any], cur: dict[str, Any], metric: str, delta: float) -> bool | None:
    bc, cc = base.get(f"{metric}_ci"), cur.get(f"{metric}_ci")
    if not (isinstance(bc, (list, tuple)) and isinstance(cc, (list, tuple)) and len(bc) == 2 and len(cc) == 2):
        return None
    h = math.hypot((bc[1] - bc[0]) / 2, (cc[1] - cc[0]) / 2)
    return abs(delta) > h


def comparison_table(comp: Comparison, suite: str) -> Any:
    """One row per checked metric; a cell's identity is printed on its first row only, and the
    dataset/protocol goes to the title when every cell shares it (keeps CI logs narrow)."""
    from rich.markup import escape
    from rich.table import Table

    wheres = {where_label(c.key) for c in comp.checks}
    shared = len(wheres) == 1
    t = Table(title=f"fssbench regress: {suite}" + (f" ({next(iter(wheres))})" if shared else ""))
    for name, just in (("Method", "left"), ("Backbone", "left"), ("Shot", "right"), ("Fold", "left"),
                       ("Metric", "left"), ("Baseline", "right"), ("Current", "right"), ("Δ", "right"),
                       ("Tol.", "right"), ("CI excl. 0", "center"), ("Status", "left")):
        t.add_column(name, justify=just)  # type: ignore[arg-type]
    style = {"ok": "green", "improved": "cyan", "regressed": "bold red", "missing": "bold red"}
    previous = None
    for c in comp.checks:
        cid = _identity(c.key[0])
        kind = cid.get("kind", "mask")
        label = (c.label or method_label(cid.get("method", ""), cid.get("method_options", {}))) + ("" if kind == "mask" else f" [{kind}]")
        if not shared:
            label += f" {where_label(c.key)}"
        ident = (escape(label), escape(backbone_label(cid.get("train_backbone", ""), cid.get("eval_backbone", ""))),
                 str(c.key[1]), fold_name(c.key[2]))
        d = c.delta
        ci = "" if c.ci_excludes_zero is None else ("yes" if c.ci_excludes_zero else "no")
        status = c.status + (f" ({c.note})" if c.note else "")
        t.add_row(
            *(("",) * 4 if ident == previous else ident), METRIC_NAMES[c.metric], f"{c.baseline:.2f}",
            "–" if c.current is None else f"{c.current:.2f}", "–" if d is None else f"{d:+.2f}",
            f"{c.tolerance:.2f}", ci, f"[{style[c.status]}]{status}[/]",
        )
        previous = ident
    return t


def run_regress(
    results_dir: str | Path,
    baseline: str | Path,
    *,
    tolerance: float | None = None,
    update: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[str, Comparison | None, dict[str, Any] | None]:
    """Compare (and with ``update`` rewrite the baseline). Returns suite, comparison (None when
    there was no baseline to compare with) and the written baseline document (``update`` only)."""
    if tolerance is not None and (math.isnan(tolerance) or tolerance < 0):
        raise UserError(f"--tolerance must be a non-negative number of points, got {tolerance}")
    suite, current = current_cells(results_dir, n_boot=n_boot, seed=seed)
    baseline = Path(baseline)
    previous = load_baseline(baseline, allow_legacy=update) if (not update or baseline.exists()) else None
    if previous is not None and previous.get("suite") not in (None, suite):
        from fssbench.console import err_console

        err_console.print(
            f"warning: baseline '{baseline}' is for suite '{previous.get('suite')}', the results are suite '{suite}'",
            style="yellow", highlight=False, soft_wrap=True,
        )
    legacy = previous is not None and previous.get("format") in LEGACY_FORMATS
    comp = compare(previous, current, tolerance) if previous is not None and not legacy else None
    written = None
    if update:
        written = build_baseline(suite, current, previous, tolerance)
        write_baseline(baseline, written)
    return suite, comp, written


def summary_lines(comp: Comparison) -> list[str]:
    n_reg = sum(c.status == "regressed" for c in comp.checks)
    n_imp = sum(c.status == "improved" for c in comp.checks)
    return [f"{len(comp.checks)} checks: {n_reg} regressed, {len(comp.missing_cells)} missing cells, "
            f"{n_imp} improved, {len(comp.new_cells)} new cells (not in the baseline)"]


__all__ = [
    "BASELINE_FORMAT", "CELL_KEYS", "LEGACY_FORMATS", "Check", "Comparison", "build_baseline", "cell_key", "compare", "current_cells",
    "describe", "legacy_key", "load_baseline", "run_regress", "tolerance_for", "write_baseline",
]
