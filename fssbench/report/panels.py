"""Figures read from the stored artefacts and cells: qualitative panels, denoising trajectories,
error maps, and evaluation-option sensitivity.

Nothing here knows a method. The panels read what the evaluation engine stores for the first
``eval.artefacts`` episodes of every run (inputs, truth, prediction, support annotation) and, by
name, the artefacts a method may add: ``trajectory`` (maps along its sampling, with
``trajectory_remaining``: the fraction of the sampling steps left at each map) and ``error_maps``
(with ``error_maps_noise``: the noise level of each, as a fraction of the diffusion steps). The
sensitivity figure reads the cells: rows that differ only in one of the method's evaluation options
(``Method.eval_options``, e.g. sampling steps or ensemble size) become one line over that option.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from fssbench.report.figures import save_figure
from fssbench.report.identity import is_control
from fssbench.report.labels import aux_label, backbone_label, method_label, slug
from fssbench.results import RunResult, read_artefacts

Figure = tuple[list[Path], str]


def load_artefacts(run: RunResult, results_dir: Path) -> dict[int, dict[str, np.ndarray]]:
    """``{episode id: {name: array}}`` of a run's artefacts file ({} when it has none)."""
    rel = (run.provenance or {}).get("artefacts")
    if not rel:
        return {}
    path = Path(results_dir) / rel
    if not path.is_file():
        return {}
    return {eid: {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in arrays.items()}
            for eid, arrays in read_artefacts(path).items()}


def run_label(run: RunResult) -> str:
    """The suite's own label where it gave one, else the method and its non-default options."""
    c = run.config
    own = c.get("label")
    base = own if own and own != c["method"] else method_label(c["method"], c.get("method_options"))
    return base + aux_label(c.get("aux"))


def _short(label: str, width: int = 28) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(label, width)[:3])


def _plt() -> Any:
    from fssbench.report.figures import pyplot as plt_and_sns

    return plt_and_sns()[0]


def _solid(colour: str) -> Any:
    from matplotlib.colors import ListedColormap

    return ListedColormap([colour])


_ORANGE, _YELLOW, _CYAN = _solid("#ff7f0e"), _solid("#ffd700"), _solid("#00e5ff")


def _rgb(chw: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(chw, dtype=np.float32).transpose(1, 2, 0), 0, 1)


def _overlay(ax: Any, mask: np.ndarray, colour: str) -> None:
    m = np.asarray(mask, dtype=np.float32)
    if m.max() > 0:
        ax.contour(m, levels=[0.5], colors=colour, linewidths=0.8)


def _clean(ax: Any) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _support_panel(ax: Any, arts: dict[str, np.ndarray], kind: str) -> None:
    """The first support with its annotation drawn on it (fg yellow, given bg cyan), or the prompt."""
    if kind == "text" or "support_images" not in arts or not len(arts["support_images"]):
        ax.set_facecolor("0.95")
        ax.text(0.5, 0.5, "text prompt\n(no support image)", ha="center", va="center", fontsize=7, transform=ax.transAxes)
        return
    ax.imshow(_rgb(arts["support_images"][0]))
    if "support_fg" in arts and kind != "image":
        fg = arts["support_fg"][0]
        if kind == "scribble":
            ax.imshow(np.ma.masked_where(fg < 0.5, fg), cmap=_YELLOW, alpha=0.9, vmin=0, vmax=1)
            if "support_bg" in arts:
                bg = arts["support_bg"][0]
                ax.imshow(np.ma.masked_where(bg < 0.5, bg), cmap=_CYAN, alpha=0.9, vmin=0, vmax=1)
        else:
            _overlay(ax, fg, "yellow")


def figure_qualitative(runs: Sequence[RunResult], results_dir: Path, out: Path, n_episodes: int = 4, max_runs: int = 8) -> list[Figure]:
    """Per (kind, shot, fold, evaluation backbone): support with its annotation, query, ground truth
    and every method's prediction on the same episodes (the first ``max_runs`` runs in suite order)."""
    plt = _plt()
    groups: dict[tuple, list[tuple[RunResult, dict]]] = {}
    for r in runs:
        c = r.config
        if is_control(c) or c.get("aux"):
            continue
        arts = load_artefacts(r, results_dir)
        if not arts:
            continue
        key = (c.get("dataset"), c.get("protocol"), c.get("kind", "mask"), int(c.get("shot", 0)), int(c.get("fold", 0)),
               c.get("eval_backbone") or c.get("train_backbone"), r.episode_hash)
        groups.setdefault(key, []).append((r, arts))
    made: list[Figure] = []
    for key, members in groups.items():
        members.sort(key=lambda x: (x[0].config.get("method_rank", 0), x[0].config.get("train_backbone") != key[5], x[0].run_id))
        members = members[:max_runs]
        common = sorted(set.intersection(*[set(a) for _, a in members]))[:n_episodes]
        if not common:
            continue
        _, first = members[0]
        cols = 3 + len(members)
        fig, axes = plt.subplots(len(common), cols, figsize=(1.7 * cols, 1.8 * len(common)), squeeze=False)
        for i, eid in enumerate(common):
            a0 = first[eid]
            _support_panel(axes[i, 0], a0, key[2])
            axes[i, 1].imshow(_rgb(a0["query_image"]))
            axes[i, 2].imshow(a0["query_mask"], cmap="gray", vmin=0, vmax=1)
            for j, (r, arts) in enumerate(members):
                ax = axes[i, 3 + j]
                a = arts[eid]
                ax.imshow(_rgb(a["query_image"]))
                pred = np.asarray(a["prediction"], dtype=np.float32)
                ax.imshow(np.ma.masked_where(pred < 0.5, pred), cmap=_ORANGE, alpha=0.55, vmin=0, vmax=1)
                _overlay(ax, a["query_mask"], "cyan")
                gt = np.asarray(a["query_mask"]) > 0
                p = pred > 0.5
                iou = 100.0 * (gt & p).sum() / max((gt | p).sum(), 1)
                ax.text(0.02, 0.02, f"{iou:.0f}", color="white", fontsize=7, transform=ax.transAxes,
                        bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "lw": 0})
                if i == 0:
                    c = r.config
                    bb = backbone_label(c["train_backbone"], c.get("eval_backbone") or c["train_backbone"])
                    ax.set_title(_short(f"{run_label(r)} · {bb}"), fontsize=6)
            axes[i, 0].set_ylabel(f"ep {eid}", fontsize=7)
            for ax in axes[i]:
                _clean(ax)
        for ax, t in zip(axes[0, :3], (f"support ({key[2]})", "query", "ground truth")):
            ax.set_title(t, fontsize=7)
        fig.suptitle(f"{key[0]} · {key[2]} · {key[3]}-shot · fold {key[4]} · eval {key[5]}: prediction (orange), "
                     "truth outline (cyan), episode fg IoU", fontsize=8)
        fig.tight_layout()
        stem = f"fig_qualitative_{slug(f'{key[0]}_{key[1]}_{key[2]}_{key[3]}shot_f{key[4]}_{key[5]}')}"
        made.append((save_figure(fig, out, stem), f"{key[2]}, {key[3]}-shot, fold {key[4]}, on {key[5]}: support, query, truth and "
                     f"every method's prediction on the same episodes"))
    return made


def _map_rows(rows: Sequence[tuple[str, dict[str, np.ndarray]]], name: str, titles: Sequence[str], suptitle: str,
              **imshow: Any) -> Any:
    """A grid: per row query, ground truth, then the maps of artefact ``name`` (``titles`` above them)."""
    plt = _plt()
    n = max(a[name].shape[0] for _, a in rows)
    fig, axes = plt.subplots(len(rows), n + 2, figsize=(1.6 * (n + 2), 1.7 * len(rows)), squeeze=False)
    for i, (ylabel, a) in enumerate(rows):
        axes[i, 0].imshow(_rgb(a["query_image"]))
        axes[i, 0].set_ylabel(ylabel, fontsize=7)
        axes[i, 1].imshow(a["query_mask"], cmap="gray", vmin=0, vmax=1)
        for j in range(a[name].shape[0]):
            axes[i, 2 + j].imshow(a[name][j], **imshow)
            if i == 0:
                axes[i, 2 + j].set_title(titles[j] if j < len(titles) else f"map {j}", fontsize=7)
        for ax in axes[i]:
            _clean(ax)
    axes[0, 0].set_title("query", fontsize=7)
    axes[0, 1].set_title("ground truth", fontsize=7)
    fig.suptitle(suptitle, fontsize=8)
    fig.tight_layout()
    return fig


def _label(c: dict[str, Any]) -> str:
    bb = c.get("eval_backbone") or c["train_backbone"]
    return f"{c.get('label', c['method'])} · {backbone_label(c['train_backbone'], bb)}"


def figure_trajectories(runs: Sequence[RunResult], results_dir: Path, out: Path) -> list[Figure]:
    """Per method label: x_t along the sampling for one episode of each annotation kind."""
    by: dict[str, dict[str, tuple[int, dict]]] = {}
    for r in sorted(runs, key=lambda r: r.run_id):
        c = r.config
        if is_control(c) or c.get("aux"):
            continue
        with_traj = [(e, a) for e, a in sorted(load_artefacts(r, results_dir).items()) if "out.trajectory" in a]
        if with_traj:
            by.setdefault(_label(c), {}).setdefault(f"{c.get('kind', 'mask')} ({c.get('shot')}-shot)", with_traj[0])
    made: list[Figure] = []
    for lab, kinds in by.items():
        rows = [(f"{kind}\nep {eid}", a) for kind, (eid, a) in kinds.items()]
        left = rows[0][1].get("out.trajectory_remaining")
        titles = [f"{float(f):.0%} of steps left" for f in left] if left is not None else []
        fig = _map_rows(rows, "out.trajectory", titles, f"Denoising trajectories, {lab}: the foreground probability of x_t, "
                        "pure noise (left) to the prediction", cmap="magma", vmin=0, vmax=1)
        made.append((save_figure(fig, out, f"fig_trajectory_{slug(lab)}"), f"{lab}: x_t along the sampling, one episode per kind"))
    return made


def figure_error_maps(runs: Sequence[RunResult], results_dir: Path, out: Path, n_episodes: int = 4) -> list[Figure]:
    """Per method label (mask supports): the predicted error maps at low, medium and high noise."""
    made: list[Figure] = []
    seen: set[str] = set()
    for r in sorted(runs, key=lambda r: r.run_id):
        c = r.config
        lab = _label(c)
        if is_control(c) or c.get("aux") or c.get("kind", "mask") != "mask" or lab in seen:
            continue
        eps = [(e, a) for e, a in sorted(load_artefacts(r, results_dir).items()) if "out.error_maps" in a][:n_episodes]
        if not eps:
            continue
        seen.add(lab)
        noise = eps[0][1].get("out.error_maps_noise")
        n_l = eps[0][1]["out.error_maps"].shape[0]
        names = ("low", "medium", "high") if n_l == 3 else tuple(str(j) for j in range(n_l))
        titles = [f"{nm} noise" + (f" (t = {float(noise[j]):.1f} T)" if noise is not None else "") for j, nm in enumerate(names)]
        fig = _map_rows([(f"ep {e}", a) for e, a in eps], "out.error_maps", titles,
                        f"Predicted error maps e^ = x_0 - x_t (red: add foreground, blue: remove), {lab}", cmap="RdBu_r", vmin=-2, vmax=2)
        made.append((save_figure(fig, out, f"fig_error_maps_{slug(lab)}"), f"{lab}: predicted error maps at low / medium / high noise"))
    return made


def sensitivity_frame(cells: pd.DataFrame) -> pd.DataFrame:
    """Long frame (option, value, mIoU, interval, group) of rows that differ only in one evaluation
    option, fold-mean cells, three or more values of the option per group."""
    from fssbench.methods import get_method_class
    from fssbench.errors import UserError

    if cells.empty:
        return pd.DataFrame()
    mean = cells[(cells["metric"] == "miou") & (cells["fold"].astype(str) == "mean")]
    out = []
    for method, sub in mean.groupby("method"):
        try:
            cls = get_method_class(str(method))
        except UserError:
            continue
        opts_eval = sorted(cls.eval_options - cls.artefact_options)
        for opt in opts_eval:
            groups: dict[str, list[tuple[Any, dict]]] = {}
            for rec in sub.to_dict("records"):
                o = json.loads(rec["options"])
                if opt not in o or not isinstance(o[opt], (int, float)) or isinstance(o[opt], bool):
                    continue
                rest = {k: v for k, v in o.items() if k != opt and k not in cls.artefact_options}
                key = json.dumps([rec["dataset"], rec["protocol"], rest, rec["train_backbone"], rec["eval_backbone"],
                                  rec["kind"], rec["config"], int(rec["shot"])], sort_keys=True, default=str)
                groups.setdefault(key, []).append((o[opt], rec))
            for key, pts in groups.items():
                if len({v for v, _ in pts}) < 3:
                    continue
                _, r0 = pts[0]
                name = f"{method} · {backbone_label(r0['train_backbone'], r0['eval_backbone'])} · {r0['kind']} · {r0['shot']}-shot"
                for v, rec in sorted(pts, key=lambda x: x[0]):
                    out.append({"option": opt, "value": v, "miou": rec["value"], "ci_lo": rec["ci_lo"], "ci_hi": rec["ci_hi"],
                                "group": name, "dataset": rec["dataset"]})
    return pd.DataFrame(out)


def figure_sensitivity(cells: pd.DataFrame, out: Path) -> list[Figure]:
    """One axis per swept evaluation option: fold-mean mIoU against its value, 95% bands."""
    df = sensitivity_frame(cells)
    if df.empty:
        return []
    plt = _plt()
    opts = list(dict.fromkeys(df["option"]))
    fig, axes = plt.subplots(1, len(opts), figsize=(4.2 * len(opts), 3.2), squeeze=False)
    for ax, opt in zip(axes[0], opts):
        sub = df[df["option"] == opt]
        for g, pts in sub.groupby("group", sort=False):
            ax.plot(pts["value"], pts["miou"], marker="o", label=g)
            ax.fill_between(pts["value"], pts["ci_lo"], pts["ci_hi"], alpha=0.2)
        vals = sorted(set(sub["value"]))
        if vals and min(vals) > 0 and max(vals) / min(vals) >= 10:
            ax.set_xscale("log")
        ax.set_xticks(vals)
        ax.set_xticklabels([str(v) for v in vals])
        ax.set_xlabel(opt)
        ax.set_ylabel("mIoU, mean over folds (%)")
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.suptitle("Sensitivity to evaluation options (one trained decoder; 95% bands)", fontsize=9)
    fig.tight_layout()
    return [(save_figure(fig, out, "fig_sensitivity"), f"mIoU against {', '.join(opts)} (evaluation options, one decoder), 95% bands")]
