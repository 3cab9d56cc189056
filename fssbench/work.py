"""The work of a task: train a decoder, evaluate a run (or one shard of it), merge a sharded run.

The runner (``fssbench.runner``, through its executor) and the task entry point
(``fssbench.executors.task``, in a Ray worker, a SLURM job or under torchrun) both call these, with
a :class:`~fssbench.workspace.Workspace` holding the process's dataset, backbones and episode
lists: the same function writes the same files wherever it runs. ``prog`` is a progress display
(``add_task`` / ``advance`` / ``remove_task``), ``say`` takes a one-line message.

Crash safety: every file is written to a temporary name and renamed into place; a finished run is
exactly a readable ``results/<suite>/<run_id>.json``; a finished decoder is exactly a
``decoders/<decoder_id>/decoder.json`` marker next to its ``best.pt``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from typing import Any, Callable

import numpy as np
import torch
from rich.markup import escape

from fssbench.episodes import atomic_write_text
from fssbench.methods import TrainConfig
from fssbench.plan import part_file
from fssbench.results import RunResult, environment, read_artefacts, save_artefacts, sha256_file
from fssbench.suite import Run
from fssbench.workspace import Workspace


def train_decoder(ws: Workspace, decoder_id: str, run: Run, prog: Any, say: Callable[[str], None]) -> None:
    """Train the run's decoder into ``decoders/<decoder_id>/`` (resuming from its ``last.pt``)."""
    from fssbench.engine.train import train

    cfg = run.config
    tcfg = TrainConfig(**run.train_config)
    method = ws.make_method(run, cfg.train_backbone)
    out = ws.decoder_dir(decoder_id)
    task = prog.add_task(escape(f"train {decoder_id}"), total=tcfg.epochs * tcfg.episodes_per_epoch)
    summary = train(
        method,
        ws.dataset(),
        cfg.fold,
        ws.protocol(run),
        tcfg,
        out,
        seed=cfg.seeds["train"],
        shot=tcfg.shot,
        kind=tcfg.kind,
        val_episodes=tcfg.val_episodes,
        device=ws.device,
        on_step=lambda n: prog.advance(task, n),
    )
    prog.remove_task(task)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun (DDP) rank 0 writes the files
        return
    meta = {
        "decoder_id": decoder_id,
        "method": cfg.method,
        "training_options": type(method).training_options(cfg.method_options),
        "train_backbone": cfg.train_backbone,
        "train_config": asdict(tcfg),
        # strict JSON: a validation that never gave a finite score is null, not NaN
        "summary": {k: (None if isinstance(v, float) and v != v else v) for k, v in asdict(summary).items()},
        "environment": environment() | {"device": str(ws.device), "torch_threads": torch.get_num_threads(),
                                         "world_size": int(os.environ.get("WORLD_SIZE", "1"))},
    }
    atomic_write_text(out / "decoder.json", json.dumps(meta, indent=1) + "\n")
    best = f"{summary.best_val_miou:.1f} at epoch {summary.best_epoch}" if summary.best_epoch >= 0 else "n/a (no finite validation score)"
    say(f"trained {decoder_id}: best base-val mIoU {best} ({summary.seconds:.0f}s)")


def backbone_provenance(bb: Any) -> dict[str, Any]:
    """A backbone's name, pretraining and weights file (with its hash) for a result's provenance."""
    path = getattr(bb, "weights_path", None)
    return {
        "name": bb.name,
        "pretraining": bb.pretraining,
        "weights": None if path is None else str(path),
        "sha256": None if path is None else sha256_file(path),
    }


def shard_bounds(n_items: int, i: int, n: int) -> tuple[int, int]:
    """Episodes ``[lo, hi)`` of shard ``i`` of ``n``: contiguous blocks in episode order."""
    return n_items * i // n, n_items * (i + 1) // n


def evaluate_run(ws: Workspace, run: Run, part: tuple[int, int] | None, prog: Any) -> RunResult | None:
    """Evaluate a run and write its result file; with ``part = (i, n)`` evaluate only shard ``i`` of
    ``n`` and write that part's records (``parts/<run_id>/i-of-n.json``; :func:`merge_parts` makes
    the result once every part is there)."""
    from fssbench.engine.evaluate import evaluate

    cfg = run.config
    started = time.time()
    if cfg.incompatible:  # an explicit cell: nothing to evaluate, and the reason kept
        result = RunResult(
            run_id=run.run_id,
            suite=ws.suite.name,
            config=cfg.as_dict() | {"profile": ws.suite.profile, "suite_file": str(ws.suite.source)},
            episode_hash=ws.episode_list(run).hash,
            metrics={},
            records=[],
            provenance=environment(),
            status="incompatible",
            reason=cfg.incompatible,
        )
        result.save(ws.out)
        return result
    method = ws.make_method(run, cfg.train_backbone)
    decoder = ws.load_decoder_into(method, run)
    if cfg.eval_backbone != cfg.train_backbone:
        method.set_backbone(ws.backbone(cfg.eval_backbone))
    method.to(ws.device)
    lst = ws.episode_list(run)
    specs = ws.episode_specs(run)
    n_art = int(ws.suite.eval.get("artefacts", 0))
    lo, hi = shard_bounds(len(specs), *part) if part else (0, len(specs))
    specs, n_art = specs[lo:hi], max(0, min(n_art - lo, hi - lo))
    aux = ws.aux_supplier(run, keep_controls=n_art)
    what = f"eval {run.run_id}" + (f" [{part[0] + 1}/{part[1]}]" if part else "")
    task = prog.add_task(escape(what), total=len(specs))
    from fssbench.backbones.cache import feature_cache

    cache_before = ws.feature_cache.stats.as_dict()
    with feature_cache(ws.feature_cache):
        out = evaluate(
            method,
            ws.dataset(),
            specs,
            cfg.fold,
            cfg.kind,
            ws.protocol(run),
            batch_size=int(ws.suite.eval.get("batch_size", 8)),
            device=ws.device,
            sampling_seed=cfg.seeds["sampling"],
            class_ids=ws.dataset().fold_classes(cfg.fold),
            artefacts=n_art,
            n_boot=int(ws.suite.eval.get("n_boot", 1000)),
            on_progress=lambda n: prog.advance(task, n),
            extend=None if aux is None else aux.extend,
            episode_extras=None if aux is None else (lambda eid: {"aux_fallbacks": float(aux.fallbacks.get(eid, 0))}),
            episode_artefacts=None if aux is None else (lambda eid: {"aux_control": aux.controls[eid]} if eid in aux.controls else {}),
            compute_metrics=part is None,
        )
    prog.remove_task(task)
    aux_summary = None if aux is None else aux.summary([s.episode_id for s in specs])
    cls = type(method)
    env = environment() | {
        "started": started,
        "finished": time.time(),
        "eval_seconds": out.seconds,
        "device": str(ws.device),
        "precision": "bf16-autocast" if ws.device.type == "cuda" else "fp32",
        "torch_threads": torch.get_num_threads(),
        "autocast": "bfloat16" if ws.device.type == "cuda" else None,
        "eval_options": {k: cfg.method_options.get(k) for k in sorted(cls.eval_options)},
        "backbones": {
            "train": backbone_provenance(ws.backbone(cfg.train_backbone)),
            "eval": backbone_provenance(ws.backbone(cfg.eval_backbone)),
        },
        "trainable_parameters": sum(p.numel() for p in method.parameters()),
        "feature_cache": _cache_delta(cache_before, ws.feature_cache.stats.as_dict(), ws.feature_cache.max_bytes),
    }
    if part is not None:
        path = part_file(ws.out, run.run_id, *part)
        if out.artefacts:
            save_artefacts(path.with_suffix(".npz"), out.artefacts)
        body = {"part": list(part), "records": [x.to_dict() for x in out.records], "provenance": env,
                "decoder": decoder, "aux": aux_summary}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(body) + "\n")
        return None
    if aux_summary is not None:
        out.metrics["aux"] = aux_summary
    return _write_result(ws, run, lst.hash, out.records, out.metrics, env, decoder, out.artefacts)


def _cache_delta(before: dict[str, Any], after: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """This evaluation's share of the process's feature-cache counters (hits, misses, backbone seconds)."""
    out: dict[str, Any] = {k: after[k] - before[k] for k in ("hits", "misses", "stored")}
    out["backbone_seconds"] = round(after["backbone_seconds"] - before["backbone_seconds"], 3)
    out["max_gb"] = round(max_bytes / 2**30, 3)
    return out


def _write_result(ws: Workspace, run: Run, episode_hash: str, records: list, metrics: dict, env: dict,
                  decoder: dict, artefacts: dict) -> RunResult:
    if artefacts:
        art_path = ws.out / "artefacts" / f"{run.run_id}.npz"
        save_artefacts(art_path, artefacts)
        env["artefacts"] = str(art_path.relative_to(ws.out))
    result = RunResult(
        run_id=run.run_id,
        suite=ws.suite.name,
        config=run.config.as_dict() | {"profile": ws.suite.profile, "suite_file": str(ws.suite.source)},
        episode_hash=episode_hash,
        metrics=metrics,
        records=records,
        provenance=env,
        decoder=decoder,
    )
    result.save(ws.out)
    return result


def merge_parts(ws: Workspace, run: Run, n: int) -> RunResult:
    """The result of a sharded run from its ``n`` parts: records in episode order, metrics (and
    intervals) computed once from all of them, exactly as one worker would have; parts removed."""
    from fssbench.engine.evaluate import summarize
    from fssbench.metrics import EpisodeRecord

    parts = [json.loads(part_file(ws.out, run.run_id, i, n).read_text()) for i in range(n)]
    records = [EpisodeRecord.from_dict(x) for p in parts for x in p["records"]]
    cfg = run.config
    metrics = summarize(records, class_ids=ws.dataset().fold_classes(cfg.fold), n_boot=int(ws.suite.eval.get("n_boot", 1000)))
    if parts[0]["aux"] is not None:
        agg = dict(parts[0]["aux"])
        for k in ("fallbacks", "episodes_with_fallback", "images"):
            agg[k] = int(sum(p["aux"][k] for p in parts))
        metrics["aux"] = agg
    env = dict(parts[0]["provenance"])
    env |= {"started": min(p["provenance"]["started"] for p in parts), "finished": max(p["provenance"]["finished"] for p in parts),
            "eval_seconds": float(sum(p["provenance"]["eval_seconds"] for p in parts)), "shards": n}
    caches = [p["provenance"].get("feature_cache") for p in parts]
    if all(caches):
        env["feature_cache"] = {k: (round(sum(c[k] for c in caches), 3) if k != "max_gb" else caches[0][k]) for k in caches[0]}
    arts: dict[int, dict[str, np.ndarray]] = {}
    for i in range(n):
        f = part_file(ws.out, run.run_id, i, n).with_suffix(".npz")
        if f.is_file():
            arts.update(read_artefacts(f))
    result = _write_result(ws, run, ws.episode_list(run).hash, records, metrics, env, parts[0]["decoder"], arts)
    shutil.rmtree(ws.out / "parts" / run.run_id, ignore_errors=True)
    return result


__all__ = ["backbone_provenance", "evaluate_run", "merge_parts", "shard_bounds", "train_decoder"]
