"""Backbone stitching: the upgrade table (the DiffUp paper's Table 5 layout), stitched vs
re-trained per evaluation backbone, and the per-episode prior IoU distributions (its Fig. 6).

Pairing. A stitched run (decoder trained with backbone A, evaluated with B) and its "before" run
(the same decoder on A) score the same frozen episodes (same fold, shot and episode seed), so
their difference is a paired Δ on identical episodes; so is "stitched vs re-trained" (B's own
decoder on B). A row averages folds (and seeds) as the tables do, with one paired cluster
bootstrap over all of them (``fssbench.metrics.paired_delta``).

Upgrade kinds come from the backbone registry's metadata (architecture, pre-training, size), so
any pair of backbones is named the way the paper names its three upgrade types, or a downgrade.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from fssbench.metrics import Pair, paired_delta
from fssbench.report.cells import RunStats
from fssbench.report.identity import canonical, is_control
from fssbench.results import RunResult

UPGRADE_COLUMNS = ["method", "kind", "shot", "train_backbone", "eval_backbone", "upgrade", "n_runs",
                   "before", "after", "delta", "ci_lo", "ci_hi", "p_value", "retrained", "vs_retrained",
                   "vs_ci_lo", "vs_ci_hi", "vs_p_value"]


def _size(name: str) -> float:
    """A backbone's size for naming scale-up/-down: its parameter count when registered, else the
    sum over layers of channels (the registry's static description)."""
    from fssbench.backbones import get_backbone_info

    info = get_backbone_info(name.partition(":")[0])
    params = info.extra.get("params") if isinstance(info.extra, dict) else None
    if isinstance(params, (int, float)):
        return float(params)
    return float(sum(s.channels for s in info.layer_specs()))


def upgrade_kind(train: str, eval_: str) -> str:
    """How the paper would name A -> B: "scale-up", "CNN → ViT", "zoo-sup → zoo-clip", or a downgrade."""
    from fssbench.backbones import get_backbone_info

    try:
        a, b = get_backbone_info(train.partition(":")[0]), get_backbone_info(eval_.partition(":")[0])
    except Exception:  # noqa: BLE001 - a backbone no longer registered: name it plainly
        return f"{train} → {eval_}"
    parts = []
    if a.arch != b.arch:
        parts.append(f"{a.arch.upper()} → {b.arch.upper()}" + (" (downgrade)" if (a.arch, b.arch) == ("vit", "cnn") else ""))
    if a.pretraining != b.pretraining:
        parts.append(f"pre-training {a.pretraining} → {b.pretraining}")
    if not parts:
        sa, sb = _size(train), _size(eval_)
        parts.append("scale-up" if sb > sa else "scale-down (downgrade)" if sb < sa else "same size")
    return "; ".join(parts)


def _key(s: RunStats, drop: Sequence[str]) -> str:
    return canonical({k: v for k, v in s.ident.items() if k not in drop})


def _paired(pairs: list[Pair], n_boot: int, seed: int, n_perm: int) -> Any:
    try:
        return paired_delta(pairs, n_boot=n_boot, seed=seed, n_perm=n_perm)
    except ValueError:
        return None


def upgrade_frame(runs: Sequence[RunResult], n_boot: int = 1000, seed: int = 0, n_perm: int = 10000) -> pd.DataFrame:
    """One row per (method, kind, shot, A -> B) stitched pair: before (A's decoder on A), after (A's
    decoder on B), paired Δ; and B's re-trained decoder on B with the paired stitched − re-trained."""
    stats = [RunStats(r) for r in runs if not is_control(r.config) and r.records]
    # a run's counterpart with another eval (and train) backbone: same identity otherwise
    drop_eval = ("eval_backbone", "incompatible")
    drop_both = ("eval_backbone", "train_backbone", "incompatible", "checkpoint")
    by_eval = {(_key(s, drop_eval), s.keys["eval_backbone"], s.keys["fold"], _seed_key(s)): s for s in stats}
    by_both = {(_key(s, drop_both), s.keys["train_backbone"], s.keys["eval_backbone"], s.keys["fold"], _seed_key(s)): s
               for s in stats}
    groups: dict[tuple, list[tuple[RunStats, RunStats, RunStats | None]]] = {}
    for s in stats:
        a, b = s.keys["train_backbone"], s.keys["eval_backbone"]
        if a == b:
            continue
        before = by_eval.get((_key(s, drop_eval), a, s.keys["fold"], _seed_key(s)))
        if before is None:
            continue
        retrained = by_both.get((_key(s, drop_both), b, b, s.keys["fold"], _seed_key(s)))
        g = (s.run.config.get("label", s.keys["method"]), s.keys["kind"], s.keys["shot"], a, b)
        groups.setdefault(g, []).append((before, s, retrained))
    rows = []
    for (label, kind, shot, a, b), members in groups.items():
        w = 1.0 / len(members)
        res = _paired([Pair(x.records, y.records, x.class_ids, w, group=x.keys["fold"], tag=x.run.episode_hash)
                       for x, y, _ in members], n_boot, seed, n_perm)
        retr = [(z, y) for _, y, z in members if z is not None]
        vs = None
        if len(retr) == len(members):
            vs = _paired([Pair(z.records, y.records, z.class_ids, w, group=z.keys["fold"], tag=z.run.episode_hash)
                          for z, y in retr], n_boot, seed, n_perm)
        rows.append({
            "method": label, "kind": kind, "shot": shot, "train_backbone": a, "eval_backbone": b,
            "upgrade": upgrade_kind(a, b), "n_runs": len(members),
            "before": res.value_a if res else math.nan, "after": res.value_b if res else math.nan,
            "delta": res.delta if res else math.nan, "ci_lo": res.ci_low if res else math.nan,
            "ci_hi": res.ci_high if res else math.nan, "p_value": res.p_value if res else math.nan,
            "retrained": vs.value_a if vs else math.nan, "vs_retrained": vs.delta if vs else math.nan,
            "vs_ci_lo": vs.ci_low if vs else math.nan, "vs_ci_hi": vs.ci_high if vs else math.nan,
            "vs_p_value": vs.p_value if vs else math.nan,
        })
    return pd.DataFrame(rows, columns=UPGRADE_COLUMNS)


def _seed_key(s: RunStats) -> str:
    return canonical(s.run.config.get("seeds", s.run.config.get("seed")))


def _f(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def _d(v: float, lo: float, hi: float) -> str:
    if math.isnan(v):
        return "–"
    return f"{v:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def _p(p: float) -> str:
    return "–" if math.isnan(p) else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def upgrade_markdown(df: pd.DataFrame, incompatible: Sequence[RunResult] = ()) -> str:
    """The paper's Table 5 layout: per upgrade, mIoU before (A's decoder on A) and after stitching
    it to B, Δ with its paired 95% interval, then B's re-trained decoder and stitched − re-trained."""
    lines = ["# Backbone upgrade without re-training", "",
             "Before: the decoder on the backbone it was trained with (A). After: the same decoder on backbone B, "
             "no re-training. Δ = after − before, paired on identical episodes (95% cluster-bootstrap interval, "
             "sign-flip p). Re-trained: B's own decoder on B; stitched − re-trained says what stitching costs. "
             "mIoU, fold means.", ""]
    for (method, kind, shot), sub in df.groupby(["method", "kind", "shot"], sort=False):
        lines += [f"## {method} · {kind} · {shot}-shot", "",
                  "| upgrade | A → B | before | after | Δ [95% CI] | p | re-trained on B | stitched − re-trained [95% CI] |",
                  "|---|---|--:|--:|--:|--:|--:|--:|"]
        for x in sub.itertuples():
            lines.append(f"| {x.upgrade} | {x.train_backbone} → {x.eval_backbone} | {_f(x.before)} | {_f(x.after)} | "
                         f"{_d(x.delta, x.ci_lo, x.ci_hi)} | {_p(x.p_value)} | {_f(x.retrained)} | "
                         f"{_d(x.vs_retrained, x.vs_ci_lo, x.vs_ci_hi)} |")
        lines.append("")
    if incompatible:
        lines += ["Incompatible pairs (no rule maps the decoder; see `incompatible.md`): "
                  + ", ".join(sorted({f"{r.config.get('label', r.config['method'])} {r.config['train_backbone']} → "
                                      f"{r.config['eval_backbone']}" for r in incompatible})), ""]
    return "\n".join(lines)


def retrained_markdown(df: pd.DataFrame) -> str:
    """Per evaluation backbone B: its re-trained decoder, then every decoder stitched onto it."""
    lines = ["# Stitched vs re-trained, per evaluation backbone", "",
             "For each evaluation backbone: the decoder re-trained on it, and each decoder trained on another "
             "backbone and stitched onto it (paired Δ on identical episodes, 95% interval). mIoU, fold means.", ""]
    for (method, kind, shot, b), sub in df.groupby(["method", "kind", "shot", "eval_backbone"], sort=False):
        retr = sub["retrained"].dropna()
        lines += [f"## {method} · {kind} · {shot}-shot · evaluated on {b}", "",
                  f"Re-trained on {b}: {_f(float(retr.iloc[0])) if len(retr) else '–'}", "",
                  "| trained on | stitched | stitched − re-trained [95% CI] | p |", "|---|--:|--:|--:|"]
        for x in sub.itertuples():
            lines.append(f"| {x.train_backbone} | {_f(x.after)} | {_d(x.vs_retrained, x.vs_ci_lo, x.vs_ci_hi)} | "
                         f"{_p(x.vs_p_value)} |")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# prior IoU distributions (Fig. 6)


def prior_iou_frame(runs: Sequence[RunResult], output: str = "prior") -> pd.DataFrame:
    """Per-episode foreground IoU (percent) of mask output ``output`` (binarised at 0.5 when scored),
    one set per (method, evaluation backbone, kind, shot): the prior does not depend on the decoder,
    so the first run of each evaluation backbone stands for it."""
    seen: set[tuple] = set()
    rows = []
    for r in runs:
        c = r.config
        if is_control(c) or not r.records or f"{output}.inter_fg" not in r.records[0].extras:
            continue
        key = (c.get("label", c["method"]), c["eval_backbone"], c["kind"], c["shot"], c["fold"])
        if key in seen:
            continue
        seen.add(key)
        for rec in r.records:
            u = rec.extras[f"{output}.union_fg"]
            rows.append({"method": key[0], "eval_backbone": key[1], "kind": key[2], "shot": key[3], "fold": key[4],
                         "episode_id": rec.episode_id, "iou": 100.0 * rec.extras[f"{output}.inter_fg"] / max(u, 1.0)})
    return pd.DataFrame(rows, columns=["method", "eval_backbone", "kind", "shot", "fold", "episode_id", "iou"])


def plot_prior_iou(df: pd.DataFrame) -> Any:
    """Histogram + KDE of per-episode prior IoU per evaluation backbone, one panel per (method, kind, shot)."""
    from fssbench.report.figures import pyplot

    plt, sns = pyplot()
    groups = list(df.groupby(["method", "kind", "shot"], sort=False))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups) + 0.5, 3.2), squeeze=False)
    palette = sns.color_palette(n_colors=max(1, df["eval_backbone"].nunique()))
    colours = dict(zip(df["eval_backbone"].unique(), palette))
    for ax, ((method, kind, shot), sub) in zip(axes[0], groups):
        for bb, part in sub.groupby("eval_backbone", sort=False):
            sns.histplot(part["iou"], stat="density", element="step", fill=True, alpha=0.25, color=colours[bb],
                         bins=np.linspace(0, 100, 26), ax=ax, label=bb)
            if part["iou"].std() > 0:  # a KDE of a constant sample is undefined
                sns.kdeplot(part["iou"], color=colours[bb], ax=ax, clip=(0, 100))
        ax.legend(fontsize="x-small", title="eval backbone", title_fontsize="x-small")
        ax.set_xlabel("per-episode prior IoU (%), prior binarised at 0.5")
        ax.set_xlim(0, 100)
        ax.set_title(f"{method} · {kind} · {shot}-shot", fontsize="small")
    fig.suptitle("Backbone-agnostic priors: per-episode IoU per evaluation backbone")
    return fig


def figure_prior_iou(df: pd.DataFrame, out: Path) -> list[Path]:
    from fssbench.report.figures import save_figure

    return save_figure(plot_prior_iou(df), out, "fig_prior_iou_kde")
