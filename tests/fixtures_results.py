"""Synthetic but valid run files with known numbers, for report/regress tests.

``make_records(miou, fbiou)`` builds episode records whose class-wise accumulated mIoU is
exactly ``miou`` and whose FB-IoU is exactly ``fbiou`` (both in percent, at most two decimals):

* every episode has ``union_fg = union_bg = 10000`` pixels;
* class ``c`` has IoU ``miou + offset_c`` with offsets symmetric around 0, so the class mean
  and the pooled foreground IoU both equal ``miou``;
* within a class, episodes alternate ``+spread`` / ``-spread`` (an even number per class),
  which gives the bootstrap some variance without moving the sums;
* the background IoU is the constant ``2 * fbiou - miou``, so FB-IoU = ``(miou + bg) / 2``;
* ``queries``: episodes of a class walk a list of that many query images (HSNet's protocol
  walks its query list, so episodes repeat queries); 0 leaves the query name empty.

The background counts are not tied to the foreground ones by a real image size; the file is
valid for the schema and the metric algebra, which is all report/regress read.

``make_run`` writes the run config fssbench writes now (``seeds``, ``profile``, ``supports``,
``protocol_settings``, ...); ``legacy=True`` writes an older file (one ``seed``, no query names).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from fssbench.metrics import EpisodeRecord, bootstrap_ci, compute_metrics
from fssbench.results import RunResult

UNION = 10000


def make_records(
    miou: float,
    fbiou: float | None = None,
    *,
    n_classes: int = 5,
    per_class: int = 8,
    spread: float = 6.0,
    class_spread: float = 8.0,
    first_class: int = 1,
    queries: int = 0,
) -> list[EpisodeRecord]:
    if per_class % 2:
        raise ValueError("per_class must be even")
    fbiou = miou + 10.0 if fbiou is None else fbiou
    bg = 2 * fbiou - miou
    offsets = np.linspace(-class_spread, class_spread, n_classes) if n_classes > 1 else np.zeros(1)
    if not (0 <= miou - class_spread - spread and miou + class_spread + spread <= 100 and 0 <= bg <= 100):
        raise ValueError("numbers out of range for synthetic records")
    recs = []
    eid = 0
    for c, off in enumerate(offsets):
        for j in range(per_class):
            iou = miou + off + (spread if j % 2 == 0 else -spread)
            query = f"img_c{first_class + c}_{j % queries}" if queries else ""
            recs.append(EpisodeRecord(eid, first_class + c, int(round(iou * UNION / 100)), UNION,
                                      int(round(bg * UNION / 100)), UNION, query))
            eid += 1
    return recs


def episode_hash_for(dataset: str, fold: int, shot: int, seed: int, n: int) -> str:
    return hashlib.sha256(f"{dataset}|{fold}|{shot}|{seed}|{n}".encode()).hexdigest()


def _tag(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:6]


def make_run(
    *,
    method: str = "hsnet",
    options: dict[str, Any] | None = None,
    train_backbone: str = "resnet50",
    eval_backbone: str | None = None,
    dataset: str = "pascal",
    fold: int = 0,
    shot: int = 1,
    kind: str = "mask",
    seed: int = 0,
    train_seed: int | None = None,
    protocol: str = "hsnet",
    miou: float = 60.0,
    fbiou: float | None = None,
    ci_half: float | None = None,
    records: bool = True,
    suite: str = "demo",
    n_classes: int = 5,
    per_class: int = 8,
    spread: float = 6.0,
    queries: int = 0,
    episode_hash: str | None = None,
    method_rank: int | None = None,
    supports: str = "own",
    profile: str = "quick",
    config: dict[str, Any] | None = None,
    empty_classes: Sequence[int] = (),
    outputs: dict[str, float] | None = None,
    legacy: bool = False,
) -> RunResult:
    """One run with mIoU ``miou`` and FB-IoU ``fbiou`` (default ``miou + 10``).

    ``seed``: the episode and sampling seeds (and the train seed unless ``train_seed``).
    ``ci_half``: store ``[v - h, v + h]`` as the intervals; default: the real bootstrap interval.
    ``config``: further config keys (or overrides). ``empty_classes``: fold classes without any
    episode (in ``metrics.fold_classes``; the stored mIoU counts them as 0, as HSNet does).
    ``outputs``: mask outputs ``{name: miou}``, scored into every record's extras.
    """
    fbiou = miou + 10.0 if fbiou is None else fbiou
    first = 1 + fold * (n_classes + len(empty_classes))
    recs = make_records(miou, fbiou, n_classes=n_classes, per_class=per_class, spread=spread, first_class=first,
                        queries=0 if legacy else queries)
    fold_classes = sorted({r.class_id for r in recs} | set(empty_classes))
    m = compute_metrics(recs, class_ids=fold_classes)
    if not empty_classes:
        assert abs(m["miou"] - miou) < 1e-9 and abs(m["fbiou"] - fbiou) < 1e-9, (m, miou, fbiou)
    if ci_half is None:
        miou_ci = list(bootstrap_ci(recs, n_boot=200, seed=0, metric="miou", class_ids=fold_classes))
        fbiou_ci = list(bootstrap_ci(recs, n_boot=200, seed=0, metric="fbiou", class_ids=fold_classes))
    else:
        miou_ci, fbiou_ci = [m["miou"] - ci_half, m["miou"] + ci_half], [m["fbiou"] - ci_half, m["fbiou"] + ci_half]
    metrics: dict[str, Any] = {
        "miou": m["miou"], "fbiou": m["fbiou"], "miou_ci": miou_ci, "fbiou_ci": fbiou_ci,
        "class_iou": {str(k): v for k, v in m["class_iou"].items()}, "n_episodes": m["n_episodes"],
    }
    if outputs:
        metrics["outputs"] = {}
        for name, v in outputs.items():
            orecs = make_records(v, v + 10.0, n_classes=n_classes, per_class=per_class, spread=spread, first_class=first)
            om = compute_metrics(orecs, class_ids=fold_classes)
            metrics["outputs"][name] = {"miou": om["miou"], "fbiou": om["fbiou"], "miou_ci": [om["miou"] - 1, om["miou"] + 1]}
            recs = [r.with_extras(**{f"{name}.{f}": float(getattr(o, f)) for f in ("inter_fg", "union_fg", "inter_bg", "union_bg")})
                    for r, o in zip(recs, orecs)]
    eval_backbone = eval_backbone or train_backbone
    opt = "".join(f"-{k}{v}" for k, v in sorted((options or {}).items()))
    extra = "" if legacy and not config else f"-{supports}-{profile}-{_tag(config or {})}"
    run_id = f"{method}{opt}-{train_backbone}-{eval_backbone}-{kind}-{dataset}-{protocol}-f{fold}-k{shot}-s{seed}" + (
        "" if train_seed is None else f"t{train_seed}") + extra
    if legacy:
        cfg: dict[str, Any] = {
            "method": method, "method_options": dict(options or {}), "train_backbone": train_backbone,
            "eval_backbone": eval_backbone, "dataset": dataset, "fold": fold, "shot": shot, "kind": kind, "seed": seed,
            "protocol": protocol, "episodes": len(recs),
        }
    else:
        metrics["fold_classes"] = fold_classes
        metrics["empty_classes"] = sorted(empty_classes)
        cfg = {
            "method": method, "label": method, "method_options": dict(options or {}), "train_backbone": train_backbone,
            "eval_backbone": eval_backbone, "dataset": dataset, "root": f"/data/{dataset}", "split_dir": None,
            "dataset_options": {}, "fold": fold, "shot": shot, "kind": kind,
            "seeds": {"episodes": seed, "train": seed if train_seed is None else train_seed, "sampling": seed},
            "protocol": protocol, "protocol_settings": {"name": protocol}, "episodes": len(recs),
            "decoder_id": f"dec-{method}-{fold}-{train_seed if train_seed is not None else seed}", "checkpoint": None,
            "supports": supports, "profile": profile, "suite_file": "suites/demo.yaml",
        }
    if method_rank is not None:
        cfg["method_rank"] = method_rank
    cfg.update(config or {})
    return RunResult(
        run_id=run_id,
        suite=suite,
        config=cfg,
        episode_hash=episode_hash or episode_hash_for(dataset, fold, shot, seed, len(recs)),
        metrics=metrics,
        records=recs if records else [],
        provenance={"fssbench": "test", "git": {"commit": "0" * 40, "dirty": False}},
    )


def write_run(directory: str | Path, **kw: Any) -> RunResult:
    run = make_run(**kw)
    run.save(directory)
    return run


def fold_miou(base: float, fold: int) -> float:
    """The mIoU ``write_grid`` gives a fold: ``base + 2 * fold``."""
    return base + 2.0 * fold


def write_grid(
    directory: str | Path,
    methods: dict[str, float],
    *,
    folds: Iterable[int] = range(4),
    shots: Sequence[int] = (1,),
    shot_gain: float = 5.0,
    seeds: Sequence[int] = (0,),
    seed_jitter: float = 0.0,
    **kw: Any,
) -> list[RunResult]:
    """Runs for every method × fold × shot × seed.

    mIoU = ``methods[m] + 2 * fold + shot_gain * (shot index) + seed_jitter * (seed index)``,
    FB-IoU = mIoU + 10.
    """
    runs = []
    for m, base in methods.items():
        for si, k in enumerate(shots):
            for f in folds:
                for ji, s in enumerate(seeds):
                    v = fold_miou(base, f) + shot_gain * si + seed_jitter * ji
                    runs.append(write_run(directory, method=m, fold=f, shot=k, seed=s, miou=v, **kw))
    return runs


def report_app():
    """The ``report`` / ``regress`` commands on a bare typer app (subcommand names kept on the line)."""
    import typer

    from fssbench.commands.report import register

    a = typer.Typer()
    register(a)

    @a.callback()
    def _root() -> None:
        pass

    return a


def invoke(app: Any, *args: object):
    """Run ``app`` in-process with a wide terminal (tables are read by the tests)."""
    from typer.testing import CliRunner

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "240"})
