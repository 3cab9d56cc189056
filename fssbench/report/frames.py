"""Loading a results folder, and its runs and episodes as data frames (``runs.csv``, ``episodes.csv``)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from fssbench.errors import UserError
from fssbench.report.identity import cell_identity, is_control, run_seeds, seeds_label
from fssbench.report.labels import backbone_label, method_label, options_json, options_label
from fssbench.results import RunResult, iter_results

RECORD_FIELDS = ("episode_id", "class_id", "inter_fg", "union_fg", "inter_bg", "union_bg")


@dataclass
class Suite:
    """Every run of a results folder, as objects and as data frames."""

    name: str
    directory: Path
    runs: list[RunResult]
    runs_df: pd.DataFrame
    _episodes_df: pd.DataFrame | None = field(default=None, repr=False)
    incompatible: list[RunResult] = field(default_factory=list)
    """Runs the method could not do on their backbone pair (``status: incompatible``): no numbers,
    shown as explicit cells, never silently dropped."""

    @property
    def episodes_df(self) -> pd.DataFrame:
        if self._episodes_df is None:
            self._episodes_df = episodes_frame(self.runs)
        return self._episodes_df


def load_runs(directory: str | Path, *, every: Sequence[RunResult] | None = None) -> list[RunResult]:
    """The scored runs (``status: ok``) of ``directory``, checked; ``every``: its runs, already read."""
    directory = Path(directory)
    if every is None:
        every = list(iter_results(directory))  # raises UserError for a missing folder or bad file
    if not every:
        raise UserError(f"results folder '{directory}' holds no run files; run `fssbench run SUITE` first")
    runs = [r for r in every if r.status == "ok"]
    if not runs:
        raise UserError(f"results folder '{directory}' holds no scored run (only incompatible cells); check the suite")
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
    every = list(iter_results(directory))
    runs = load_runs(directory, every=every)
    suites = sorted({r.suite for r in runs if r.suite})
    name = suites[0] if len(suites) == 1 else directory.name
    return Suite(name=name, directory=directory, runs=runs, runs_df=runs_frame(runs),
                 incompatible=[r for r in every if r.status == "incompatible"])


def _flatten(prefix: str, obj: Any, out: dict[str, Any]) -> None:
    """Dotted columns; a two-number ``*_ci`` list becomes ``*_ci_lo``/``*_ci_hi``, other lists JSON."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(obj, (list, tuple)):
        if prefix.endswith("_ci") and len(obj) == 2 and all(isinstance(x, (int, float)) for x in obj):
            out[f"{prefix}_lo"], out[f"{prefix}_hi"] = float(obj[0]), float(obj[1])
        else:
            out[prefix] = json.dumps(obj, default=str)
    else:
        out[prefix] = obj


def stored_ci(metrics: dict[str, Any], key: str) -> tuple[float, float]:
    ci = metrics.get(key)
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(x, (int, float)) for x in ci):
        return float(ci[0]), float(ci[1])
    return math.nan, math.nan


def run_keys(run: RunResult) -> dict[str, Any]:
    """The readable identifying columns of a run, normalised (older files: defaults filled in)."""
    c = run.config
    train = str(c.get("train_backbone", ""))
    return {
        "dataset": str(c.get("dataset", "")),
        "protocol": str(c.get("protocol", "")),
        "method": str(c.get("method", "")),
        "options": options_json(c.get("method_options")),
        "train_backbone": train,
        "eval_backbone": str(c.get("eval_backbone") or train),
        "kind": str(c.get("kind") or "mask"),
        "shot": int(c.get("shot", 0)),
        "fold": int(c.get("fold", 0)),
        "seed": seeds_label(run_seeds(c)),
        "supports": str(c.get("supports") or "own"),
        "profile": c.get("profile"),
    }


_OWN_METRICS = ("miou", "fbiou", "miou_ci", "fbiou_ci", "n_episodes", "class_iou")


def runs_frame(runs: Sequence[RunResult]) -> pd.DataFrame:
    """One row per run: identifying keys, flattened config and metrics (``metrics.outputs.<name>.miou``
    etc.), provenance. ``control``: a support-reliance control run."""
    rows = []
    for r in runs:
        row: dict[str, Any] = {"run_id": r.run_id, "suite": r.suite, **run_keys(r)}
        row["label"] = method_label(row["method"], r.config.get("method_options"))
        row["options_label"] = options_label(r.config.get("method_options"))
        row["backbone"] = backbone_label(row["train_backbone"], row["eval_backbone"])
        row["control"] = is_control(r.config)
        row["identity"] = cell_identity(r.config)
        row["episode_hash"] = r.episode_hash
        cfg: dict[str, Any] = {}
        _flatten("config", {k: v for k, v in r.config.items() if k != "method_options"}, cfg)
        cfg["config.method_options"] = options_json(r.config.get("method_options"))
        row.update(cfg)
        m = r.metrics
        row["miou"] = float(m["miou"])
        row["fbiou"] = float(m["fbiou"]) if m.get("fbiou") is not None else math.nan
        row["miou_ci_lo"], row["miou_ci_hi"] = stored_ci(m, "miou_ci")
        row["fbiou_ci_lo"], row["fbiou_ci_hi"] = stored_ci(m, "fbiou_ci")
        row["n_episodes"] = m.get("n_episodes", len(r.records))
        row["n_records"] = len(r.records)
        row["n_queries"] = len({rec.query for rec in r.records if rec.query}) or math.nan
        row["class_iou"] = json.dumps(m.get("class_iou", {}), sort_keys=True)
        more: dict[str, Any] = {}
        _flatten("metrics", {k: v for k, v in m.items() if k not in _OWN_METRICS}, more)
        row.update(more)
        prov: dict[str, Any] = {}
        _flatten("provenance", r.provenance, prov)
        row.update(prov)
        rows.append(row)
    return pd.DataFrame(rows)


EPISODE_LEAD = ("run_id", "dataset", "protocol", "method", "label", "train_backbone", "eval_backbone", "kind", "shot",
                "fold", "seed", "supports", "episode_hash")


def episodes_frame(runs: Sequence[RunResult]) -> pd.DataFrame:
    """One row per episode per run: the run's keys, the query image, the four counts, the fg IoU
    (percent) and one column per ``extras`` key of any run (NaN where a run has none)."""
    frames = []
    extras: set[str] = set()
    for r in runs:
        if not r.records:
            continue
        keys = run_keys(r)
        n = len(r.records)
        d = pd.DataFrame({k: np.fromiter((getattr(rec, k) for rec in r.records), dtype=np.int64, count=n)
                          for k in RECORD_FIELDS})
        lead = {
            "run_id": r.run_id,
            **{k: keys[k] for k in ("dataset", "protocol", "method")},
            "label": method_label(keys["method"], r.config.get("method_options")),
            **{k: keys[k] for k in ("train_backbone", "eval_backbone", "kind", "shot", "fold", "seed", "supports")},
            "episode_hash": r.episode_hash,
        }
        for i, (k, v) in enumerate(lead.items()):
            d.insert(i, k, v)
        d.insert(len(lead) + 1, "query", [rec.query for rec in r.records])  # after episode_id
        d["iou_fg"] = 100.0 * d["inter_fg"] / np.maximum(d["union_fg"], 1)
        names = sorted({k for rec in r.records for k in rec.extras})
        for k in names:
            d[k] = [float(rec.extras.get(k, math.nan)) for rec in r.records]
        extras.update(names)
        frames.append(d)
    if not frames:
        return pd.DataFrame(columns=[*EPISODE_LEAD, "episode_id", "query", *RECORD_FIELDS[1:], "iou_fg"])
    out = pd.concat(frames, ignore_index=True)  # extras a run lacks are NaN
    base = [c for c in out.columns if c not in extras]
    return out[base + sorted(extras)]
