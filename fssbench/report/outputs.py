"""Tables of a method's declared mask outputs (e.g. ``prior``), beside the main prediction's.

A mask output ``NAME`` is scored like the prediction: each record carries ``NAME.inter_fg``,
``NAME.union_fg``, ``NAME.inter_bg``, ``NAME.union_bg`` in ``extras`` and the run file has
``metrics.outputs.NAME``. Each output becomes runs of its own (same config, the output's records)
and goes through the same cells and tables, so its intervals are the same cluster bootstrap.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Sequence

import pandas as pd

from fssbench.metrics import EpisodeRecord
from fssbench.report.cells import compute_cells
from fssbench.report.tables import Table, build_tables
from fssbench.results import RunResult

FIELDS = ("inter_fg", "union_fg", "inter_bg", "union_bg")


def mask_output_names(runs: Sequence[RunResult]) -> list[str]:
    """Names of mask outputs with an mIoU in some run's ``metrics.outputs``, sorted."""
    names = set()
    for r in runs:
        outs = r.metrics.get("outputs")
        if isinstance(outs, dict):
            names |= {str(k) for k, v in outs.items() if isinstance(v, dict) and _number(v.get("miou"))}
    return sorted(names)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)


def output_run(run: RunResult, name: str) -> RunResult | None:
    """The run as if output ``name`` were its prediction (None when the run has no such output).
    Records come from the extras when every record has the four counts, else none (then the
    output's stored intervals are used)."""
    outs = run.metrics.get("outputs")
    m = outs.get(name) if isinstance(outs, dict) else None
    if not isinstance(m, dict) or not _number(m.get("miou")):
        return None
    keys = [f"{name}.{f}" for f in FIELDS]
    records: list[EpisodeRecord] = []
    if run.records and all(all(k in r.extras for k in keys) for r in run.records):
        records = [EpisodeRecord(r.episode_id, r.class_id, *(int(r.extras[k]) for k in keys), r.query) for r in run.records]
    metrics = {k: v for k, v in run.metrics.items() if k in ("fold_classes", "empty_classes", "n_episodes")}
    metrics.update({k: m[k] for k in ("miou", "fbiou", "miou_ci", "fbiou_ci") if k in m})
    return replace(run, metrics=metrics, records=records)


def output_cells(runs: Sequence[RunResult], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The cells frame of every mask output, with an ``output`` column."""
    frames = []
    for name in mask_output_names(runs):
        derived = [d for r in runs if (d := output_run(r, name)) is not None]
        cells = compute_cells(derived, n_boot=n_boot, seed=seed)
        if not cells.empty:
            cells.insert(0, "output", name)
            frames.append(cells)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def output_tables(cells: pd.DataFrame) -> list[Table]:
    if cells.empty:
        return []
    return [t for name, sub in cells.groupby("output", sort=False)
            for t in build_tables(sub.drop(columns="output"), subject=f"output {name}")]


def output_deltas(runs: Sequence[RunResult], n_boot: int = 1000, seed: int = 0, n_perm: int = 10000) -> pd.DataFrame:
    """Per run and mask output: prediction − output, paired on the run's own episodes.

    "Does the decoder improve on its prior?" is a paired question: both are scored on the very
    same episodes, so the interval is the paired cluster bootstrap and ``p`` the sign-flip test
    (``fssbench.metrics.paired_test``), as for method comparisons."""
    from fssbench.metrics import paired_test
    from fssbench.report.labels import backbone_label, method_label

    rows = []
    for name in mask_output_names(runs):
        for r in runs:
            d = output_run(r, name)
            if d is None or not d.records:
                continue
            c = r.config
            res = paired_test(d.records, r.records, n_boot=n_boot, n_perm=n_perm, seed=seed,
                              class_ids=r.metrics.get("fold_classes"))
            rows.append({
                "method": c.get("label") if c.get("label") != c["method"] else method_label(c["method"], c.get("method_options", {})),
                "backbone": backbone_label(c["train_backbone"], c["eval_backbone"]),
                "kind": c["kind"], "shot": c["shot"], "fold": c["fold"], "output": name,
                "prediction": res.value_b, "output_miou": res.value_a, "delta": res.delta,
                "ci_lo": res.ci_low, "ci_hi": res.ci_high, "p": res.p_value,
            })
    return pd.DataFrame(rows)


def output_deltas_markdown(df: pd.DataFrame) -> str:
    if df.empty:
        return ""
    lines = ["## Prediction vs mask output, paired", "",
             "Δ = prediction − output (mIoU) on the run's own episodes: paired cluster bootstrap (95%) and sign-flip p.", "",
             "| method | backbone | kind | shot | fold | output | prediction | output | Δ [95% CI] | p |",
             "|---|---|---|--:|--:|---|--:|--:|--:|--:|"]
    for _, x in df.iterrows():
        p = "< 0.001" if x.p < 0.001 else f"{x.p:.3f}"
        lines.append(f"| {x.method} | {x.backbone} | {x.kind} | {x.shot} | {x.fold} | {x.output} | {x.prediction:.1f} | "
                     f"{x.output_miou:.1f} | {x.delta:+.1f} [{x.ci_lo:+.1f}, {x.ci_hi:+.1f}] | {p} |")
    return "\n".join(lines) + "\n"
