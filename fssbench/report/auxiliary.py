"""Auxiliary supports (DifFSS-style): the table with and without them, the paired difference, and
the panel of support / condition / auxiliary images.

Pairing. A run with ``aux`` and its twin without (identical configuration apart from ``aux``)
score the same frozen episodes with the same real supports, so ``with − without`` is a paired Δ
on identical episodes (``fssbench.metrics.paired_delta``: cluster bootstrap of query images,
sign-flip p-value), Holm-adjusted over the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from fssbench.metrics import Pair, holm, paired_delta
from fssbench.report.cells import RunStats
from fssbench.report.identity import canonical, is_control
from fssbench.report.labels import backbone_label, method_label
from fssbench.results import RunResult

AUX_COLUMNS = ["method", "backbone", "kind", "shot", "fold", "seed", "condition", "backend", "aux_shots", "edges", "stand_in",
               "n", "without", "with", "delta", "ci_lo", "ci_hi", "p_value", "p_holm", "fallbacks", "episodes_with_fallback", "images"]

STAND_IN_NOTE = ("The `offline` backend is a stand-in for the diffusion model, NOT one: mask-aligned colour, texture, "
                 "lighting and background changes of the real support. Its rows say what the methods do with such "
                 "extra shots, not what DifFSS's ControlNet images would buy.")


def aux_frame(runs: Sequence[RunResult], n_boot: int = 1000, seed: int = 0, n_perm: int = 10000) -> pd.DataFrame:
    """One row per run with auxiliary supports: its twin without them, both mIoUs, paired Δ."""
    stats = [RunStats(r) for r in runs if not is_control(r.config) and r.records]
    plain: dict[str, RunStats] = {}
    for s in stats:
        if not s.ident.get("aux"):
            plain[canonical(s.ident)] = s
    rows = []
    for s in stats:
        aux = s.ident.get("aux")
        if not aux:
            continue
        twin = plain.get(canonical({k: v for k, v in s.ident.items() if k != "aux"}))
        res = None
        if twin is not None and twin.class_ids == s.class_ids and twin.run.episode_hash == s.run.episode_hash:
            try:
                res = paired_delta([Pair(twin.records, s.records, s.class_ids, tag=s.run.episode_hash)],
                                   n_boot=n_boot, n_perm=n_perm, seed=seed)
            except ValueError:
                res = None
        m = s.run.metrics.get("aux") or {}
        k = s.keys
        rows.append({
            "method": method_label(k["method"], s.ident.get("method_options")),
            "backbone": backbone_label(k["train_backbone"], k["eval_backbone"]),
            "kind": k["kind"], "shot": k["shot"], "fold": k["fold"], "seed": k["seed"],
            "condition": aux.get("condition"), "backend": aux.get("backend"), "aux_shots": aux.get("aux_shots"),
            "edges": m.get("edges"), "stand_in": aux.get("backend") == "offline",
            "n": len(s.records), "without": twin.value["miou"] if twin else float("nan"), "with": s.value["miou"],
            "delta": res.delta if res else float("nan"), "ci_lo": res.ci_low if res else float("nan"),
            "ci_hi": res.ci_high if res else float("nan"), "p_value": res.p_value if res else float("nan"),
            "fallbacks": m.get("fallbacks"), "episodes_with_fallback": m.get("episodes_with_fallback"),
            "images": m.get("images"),
        })
    df = pd.DataFrame(rows, columns=AUX_COLUMNS)
    if not df.empty:
        ok = df["p_value"].notna()
        df.loc[ok, "p_holm"] = holm(df.loc[ok, "p_value"].tolist())
    return df


def _p(p: float) -> str:
    return "–" if p != p else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def aux_markdown(df: pd.DataFrame) -> str:
    """The paper-style table (rows: method; columns: without, + each condition) and the paired Δ list."""
    lines = ["# Auxiliary supports (DifFSS-style)", ""]
    if df["stand_in"].any():
        lines += [f"> {STAND_IN_NOTE}", ""]
    from fssbench.auxiliary.conditions import CONDITIONS

    conds = [c for c in CONDITIONS if c in set(df["condition"])] + [c for c in dict.fromkeys(df["condition"]) if c not in CONDITIONS]
    for (kind, shot, fold, backbone), sub in df.groupby(["kind", "shot", "fold", "backbone"], sort=False):
        n_aux = sorted(set(sub["aux_shots"]))
        lines += [f"### {backbone}, {kind} supports, {shot}-shot, fold {fold}: mIoU without and with "
                  f"{'/'.join(map(str, n_aux))} auxiliary shots", "",
                  "| Method | without | " + " | ".join(f"+ {c}" for c in conds) + " |",
                  "|:--|--:|" + "--:|" * len(conds)]
        for method, g in sub.groupby("method", sort=False):
            by = {r["condition"]: r for r in g.to_dict("records")}
            first = next(iter(by.values()))
            cells = []
            for c in conds:
                r = by.get(c)
                cells.append("–" if r is None else f"{r['with']:.1f} ({r['delta']:+.1f})")
            lines.append(f"| {method} | {first['without']:.1f} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Cells: mIoU with auxiliary supports (Δ vs without, same episodes).", "",
              "## Paired difference (with − without)", "",
              "| Method | Backbone | Kind | Shot | Fold | Condition | Backend | Edges | n | Δ mIoU | 95% CI | p | p (Holm) | Fallbacks |",
              "|:--|:--|:--|--:|--:|:--|:--|:--|--:|--:|:--|--:|--:|--:|"]
    for r in df.to_dict("records"):
        fb = f"{r['fallbacks']} of {r['images']}" if r["images"] is not None else "–"
        lines.append(
            f"| {r['method']} | {r['backbone']} | {r['kind']} | {r['shot']} | {r['fold']} | {r['condition']} | {r['backend']} | "
            f"{r['edges'] if isinstance(r['edges'], str) else '–'} | {r['n']} | {r['delta']:+.2f} | [{r['ci_lo']:+.2f}, {r['ci_hi']:+.2f}] | {_p(r['p_value'])} | "
            f"{_p(r.get('p_holm', float('nan')))} | {fb} |"
        )
    lines += ["", "Δ: paired cluster bootstrap over query images (95%), sign-flip p, Holm over this table. Fallbacks: "
              "auxiliary images that were missing (pregenerated backend) and replaced by the real support.", ""]
    return "\n".join(lines)


def figure_aux_panel(runs: Sequence[RunResult], results_dir: Path, out: Path, n_episodes: int = 3) -> list[Path]:
    """Support (mask outlined), its control map and its auxiliary images, per condition, for the
    first episodes with stored artefacts (``eval.artefacts``); PNG and PDF."""
    from fssbench.report.figures import pyplot, save_figure

    plt = pyplot()[0]

    from fssbench.report.panels import load_artefacts

    per_cond: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    for r in sorted(runs, key=lambda r: r.run_id):
        aux = r.config.get("aux")
        if not aux or aux["condition"] in per_cond:
            continue
        arts = load_artefacts(r, results_dir)
        if arts:
            per_cond[aux["condition"]] = arts
    if not per_cond:
        return []
    conds = list(per_cond)
    eps = sorted(e for e, a in per_cond[conds[0]].items() if "aux_control" in a)[:n_episodes]
    if not eps:
        return []
    n_img = max(per_cond[c][eps[0]]["support_images"].shape[0] for c in conds)
    rows = [(e, c) for e in eps for c in conds if "aux_control" in per_cond[c].get(e, {})]
    fig, axes = plt.subplots(len(rows), n_img + 1, figsize=(1.6 * (n_img + 1), 1.6 * len(rows)), squeeze=False)
    for i, (e, c) in enumerate(rows):
        z = per_cond[c][e]
        imgs = z["support_images"]  # [K, 3, H, W]: the real support first
        ax = axes[i, 0]
        ax.imshow(z["aux_control"])
        ax.set_ylabel(f"ep{e}\n{c}", fontsize=7)
        for j in range(n_img):
            a = axes[i, j + 1]
            if j < imgs.shape[0]:
                a.imshow(np.clip(imgs[j].transpose(1, 2, 0), 0, 1))
                if j == 0 and "support_fg" in z:
                    a.contour(z["support_fg"][0], levels=[0.5], colors="yellow", linewidths=0.6)
        for a in axes[i]:
            a.set_xticks([])
            a.set_yticks([])
    axes[0, 0].set_title("condition", fontsize=8)
    axes[0, 1].set_title("support (mask)", fontsize=8)
    for j in range(2, n_img + 1):
        axes[0, j].set_title(f"aux {j - 1}", fontsize=8)
    backends = {str(r.config["aux"]["backend"]) for r in runs if r.config.get("aux")}
    title = "Auxiliary supports: " + ", ".join(sorted(backends))
    if "offline" in backends:
        title += " (offline = stand-in, not a diffusion model)"
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out, "fig_aux_panel")


__all__ = ["AUX_COLUMNS", "STAND_IN_NOTE", "aux_frame", "aux_markdown", "figure_aux_panel"]
