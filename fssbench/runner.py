"""Suite runner: execute a plan (``fssbench.plan``) as a sequence of stages.

Stages, in order (``DEFAULT_STAGES``; a new one, e.g. auxiliary supports, is one more function):

1. ``prepare_data``: the dataset (generating the embedded world when asked), frozen episode lists;
2. ``build_backbones``: every backbone the pending work needs, *before any method is seeded*
   (building a backbone draws from the RNG, so a method's init would otherwise depend on what an
   earlier run had built);
3. ``check_released``: each released decoder checkpoint the suite names is read and checked
   against its method (format, method, keys, shapes) before any training or evaluation;
4. ``generate_aux``: the auxiliary support images every pending run with ``aux`` needs, into the
   on-disk cache (``fssbench.auxiliary``), each image once, whatever the number of methods;
5. ``train_and_evaluate``: each pending decoder trained once and every pending run evaluated, one
   result file each, as a dependency graph of tasks (``fssbench.executors``) on the runner's
   executor: ``local`` (this machine), ``ray`` or ``slurm``.

Locally on the CPU the tasks run in single-threaded forked workers (``fssbench.workers``,
``--workers``): one torch thread fixes the bits on every machine, and the cores are used by
running several tasks at once; an evaluation starts as soon as its decoder is trained. On CUDA they
run in this process, one after the other.

Crash safety: every file is written to a temporary name and renamed into place; a finished run is
exactly a readable ``results/<suite>/<run_id>.json``; a finished decoder is exactly a
``decoders/<decoder_id>/decoder.json`` marker next to its ``best.pt``. A run killed at any point
(even SIGKILL) therefore resumes on the next ``fssbench run``: finished runs are skipped, a
half-trained decoder resumes from its last epoch, and nothing is computed twice. Ctrl-C stops
with one line saying what was kept.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from rich.markup import escape

from fssbench.console import console, progress
from fssbench.dispatch import DEVICE_ENV, auto_device
from fssbench.episodes import EpisodeList, atomic_write_text, check_class_shown, episode_images, sample_episodes
from fssbench.errors import UserError
from fssbench.methods import Method, TrainConfig, create_method
from fssbench.plan import Plan, decoder_dir, decoder_done, is_done, make_plan, result_file
from fssbench.protocols import Protocol
from fssbench.results import RunResult, environment, read_artefacts, save_artefacts, sha256_file
from fssbench.suite import BACKBONE_VARIANTS, Run, Suite, split_backbone

DEVICE_HELP = "use auto, cpu, cuda or cuda:N"


def resolve_device(name: str | None, *, check_available: bool = True) -> torch.device:
    """``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` -> a device; anything else is a one-line error.
    ``auto`` is ``$FSSBENCH_DEVICE`` when set (``fssbench.dispatch.auto_device``)."""
    if name in (None, "auto"):
        name = auto_device()
    if not isinstance(name, str) or not (name == "cpu" or name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit())):
        where = f" (from ${DEVICE_ENV})" if os.environ.get(DEVICE_ENV, "").strip() == name else ""
        raise UserError(f"unknown device '{name}'{where}; {DEVICE_HELP}")
    if check_available and name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{name}' requested but CUDA is not available; use --device cpu")
    return torch.device(name)


def filter_runs(runs: list[Run], only: str | None) -> list[Run]:
    """``--only``: comma-separated ``key=value`` terms (all must match) or a substring of the run id.

    A filter that matches nothing is an error naming what was there to match (a typo must not
    silently run nothing)."""
    if not only:
        return runs
    terms = [t.strip() for t in only.split(",") if t.strip()]
    out = []
    for r in runs:
        ok = True
        for t in terms:
            if "=" in t:
                k, v = (s.strip() for s in t.split("=", 1))
                if k not in r.config:
                    raise UserError(f"--only: unknown key '{k}' (keys: {', '.join(sorted(r.config))})")
                if str(r.config[k]) != v:
                    ok = False
            elif t not in r.run_id:
                ok = False
        if ok:
            out.append(r)
    if not out and runs:
        values = {}
        for t in terms:
            if "=" in t:
                k = t.split("=", 1)[0].strip()
                values[k] = sorted({str(r.config[k]) for r in runs})
        hint = "; ".join(f"{k} is one of {', '.join(v)}" for k, v in values.items()) or f"run ids look like {runs[0].run_id}"
        raise UserError(f"--only '{only}' matches none of the {len(runs)} runs ({hint}); fix the filter")
    return out


DEFAULT_FEATURE_CACHE_GB = 1.0
"""``eval.feature_cache_gb`` when a suite does not say: per process (each CPU worker has its own)."""


@dataclass
class StageContext:
    """What a stage sees: the runner (resources), the plan, the progress display and counters."""

    runner: "SuiteRunner"
    plan: Plan
    prog: Any
    say: Callable[[str], None]
    stats: dict[str, int] = field(default_factory=dict)


Stage = Callable[[StageContext], None]


class SuiteRunner:
    def __init__(
        self,
        suite: Suite,
        results_dir: str | Path | None = None,
        *,
        device: str | None = None,
        weights_dir: str | Path | None = None,
        stages: Sequence[Stage] | None = None,
        workers: int | None = None,
        executor: Any = None,
        resources: dict[str, Any] | None = None,
    ) -> None:
        """``executor``: where the tasks run (``fssbench.executors``; default: this machine);
        ``resources``: per-task requests that override the suite's ``resources`` (command line)."""
        from fssbench.executors.local import LocalExecutor
        from fssbench.workers import default_workers

        self.suite = suite
        self.out = Path(results_dir) if results_dir is not None else Path("results") / suite.name
        self.device_request = str(device or suite.eval.get("device") or "auto")
        """What was asked for (``auto`` stays ``auto`` for a cluster task: its node decides)."""
        self.device = resolve_device(device or suite.eval.get("device"))
        self.weights_dir = weights_dir
        self.stages: list[Stage] = list(stages if stages is not None else DEFAULT_STAGES)
        self.workers = default_workers() if workers is None else max(1, int(workers))
        self.executor = executor if executor is not None else LocalExecutor()
        from fssbench.backbones.cache import FeatureCache

        self.feature_cache = FeatureCache(int(float(suite.eval.get("feature_cache_gb", DEFAULT_FEATURE_CACHE_GB)) * 2**30))
        """Backbone features shared by this process's evaluations (``fssbench.backbones.cache``)."""
        self.resources = dict(resources or {})
        self._backbones: dict[str, Any] = {}
        self._dataset = None
        self._episodes: dict[tuple, EpisodeList] = {}
        self._aux: dict[str, Any] = {}

    # --- resources -------------------------------------------------------------
    def dataset(self):
        if self._dataset is None:
            from fssbench.datasets import get_dataset
            from fssbench.engine.data import CachedDataset

            d = self.suite.dataset
            root = Path(d["root"])
            gen = d.get("generate")
            if gen is not None and not (root / "synth.json").exists():
                from fssbench.synth import generate

                gen = {} if gen == "synth" else dict(gen)
                console.print(f"generating the embedded synthetic world in {escape(str(root))} ...", highlight=False)
                generate(root, seed=int(gen.get("seed", 0)), size=str(gen.get("size", "default")), force=True)
            opts = d.get("options") or {}
            self._dataset = CachedDataset(get_dataset(d["name"], root, split_dir=d.get("split_dir"), **opts))
        return self._dataset

    def backbone(self, name: str):
        if name not in self._backbones:
            from fssbench.backbones import create_backbone

            base, variant = split_backbone(name)
            self._backbones[name] = create_backbone(
                base, weights=BACKBONE_VARIANTS[variant], weights_dir=self.weights_dir
            ).to(self.device)
        return self._backbones[name]

    def protocol(self, run: Run) -> Protocol:
        return Protocol(**run.config["protocol_settings"])

    # --- status --------------------------------------------------------------------
    def plan(self, runs: list[Run]) -> Plan:
        return make_plan(runs, self.out)

    def is_done(self, run: Run) -> bool:
        return is_done(self.out, run)

    def foreign_results(self, runs: list[Run]) -> list[Path]:
        """Result files in the results folder that are not runs of ``runs`` (the full expansion):
        left by an earlier version of the suite or another profile. Reports read them too."""
        if not self.out.is_dir():
            return []
        ids = {r.run_id for r in runs}
        return sorted(p for p in self.out.glob("*.json") if not p.name.startswith(".") and p.stem not in ids)

    def graph(self, plan: Plan) -> Any:
        """The plan's pending work as tasks (``fssbench.executors.graph``), shards and resources
        (the suite's, then the command line's) filled in."""
        from fssbench.executors.graph import build_graph

        return build_graph(
            plan, lambda run: n_shards(self, run), lambda run, i, n: part_file(self.out, run.run_id, i, n).is_file(),
            self.suite.resources, self.resources,
        )

    def decoder_dir(self, decoder_id: str) -> Path:
        return decoder_dir(self.out, decoder_id)

    def decoder_done(self, decoder_id: str) -> bool:
        return decoder_done(self.out, decoder_id)

    # --- work ------------------------------------------------------------------------
    def run(self, runs: list[Run], on_event: Callable[[str], None] | None = None) -> dict[str, int]:
        say = on_event or (lambda s: console.print(escape(s), highlight=False))
        plan = self.plan(runs)
        pending = plan.pending_evaluations
        stats = {"total": len(runs), "skipped": len(runs) - len(pending), "trained": 0, "evaluated": 0}
        if not pending:
            say(f"all {len(runs)} runs already finished in {self.out}")
            return stats
        from fssbench.paths import writable_dir

        writable_dir(self.out, "results folder")
        try:
            with progress() as prog:
                ctx = StageContext(self, plan, prog, say, stats)
                for stage in self.stages:
                    stage(ctx)
        except KeyboardInterrupt:
            from fssbench.errors import Interrupted

            finished = sum(is_done(self.out, r) for r in runs)
            raise Interrupted(
                f"interrupted: {finished} of {len(runs)} runs are finished and kept in {self.out} "
                f"({stats['trained']} decoders trained now; a decoder in training resumes from its last epoch); "
                "run the same command again to continue"
            ) from None
        return stats

    def make_method(self, run: Run, backbone_name: str) -> Method:
        """Build the method with its parameters initialised from the run's training seed.

        The backbone is fetched first (``build_backbones`` has normally built it already): building
        one draws from the RNG, so seeding before it would make the method's init depend on whether
        an earlier run had built that backbone.
        """
        from fssbench.engine.train import seed_everything

        cfg = run.config
        backbone = self.backbone(backbone_name)
        seed_everything(cfg["seeds"]["train"])
        return create_method(cfg["method"], backbone, **cfg["method_options"]).to(self.device)

    def load_decoder_into(self, method: Method, run: Run) -> dict[str, Any]:
        """Load the run's trained or released decoder into ``method``; returns its provenance."""
        from fssbench.engine.checkpoint import load_decoder

        released = run.config.get("checkpoint")
        if released:
            path = Path(released)
            if _is_decoder_file(path):
                load_decoder(
                    path, method, what="released decoder",
                    fix="pass a decoder file written by fssbench for this method, or the method's own released format",
                )
            else:
                method.load_released(str(path))
            return {"checkpoint": str(path), "sha256": sha256_file(path), "released": True}
        if not run.decoder_id:
            return {}
        ddir = self.decoder_dir(run.decoder_id)
        load_decoder(ddir / "best.pt", method)
        info: dict[str, Any] = {"decoder_id": run.decoder_id, "checkpoint": str(ddir / "best.pt"), "sha256": sha256_file(ddir / "best.pt")}
        meta = ddir / "decoder.json"
        if meta.exists():
            info["summary"] = json.loads(meta.read_text())["summary"]
        return info

    def aux_cache_dir(self) -> Path:
        """``aux.cache`` of the suite, else ``<results>/aux_cache``."""
        c = self.suite.aux.get("cache")
        return Path(c) if c else self.out / "aux_cache"

    def aux_supplier(self, run: Run, keep_controls: int = 0):
        """The run's :class:`~fssbench.auxiliary.supplier.AuxSupplier` (``None`` without ``aux``);
        one per aux config, so the generator (a diffusion pipeline) is loaded once."""
        cfg = run.config.get("aux")
        if not cfg:
            return None
        from fssbench.auxiliary.cache import AuxCache
        from fssbench.auxiliary.supplier import AuxSupplier
        from fssbench.backbones.weights import resolve_weights_dir
        from fssbench.suite import canonical_hash

        key = canonical_hash(cfg, 16)
        if key not in self._aux:
            settings = {**self.suite.aux, **cfg}
            self._aux[key] = AuxSupplier(
                settings, self.dataset(), AuxCache(self.aux_cache_dir()), resolve_weights_dir(self.weights_dir),
                device="auto" if self.device.type == "cuda" else "cpu",
            )
        sup = self._aux[key]
        sup.fallbacks, sup.controls, sup.keep_controls = {}, {}, keep_controls
        return sup

    def episode_specs(self, run: Run) -> list:
        """The run's episodes as evaluated: the frozen list, or its other-class control."""
        from fssbench.controls import other_class_specs

        cfg = run.config
        specs = self.episode_list(run).episodes
        if cfg["supports"] == "other-class":
            specs = other_class_specs(self.dataset(), specs, cfg["fold"], cfg["seeds"]["episodes"])
        return specs

    def episode_list(self, run: Run) -> EpisodeList:
        cfg = run.config
        key = (cfg["fold"], cfg["shot"], cfg["episodes"], cfg["seeds"]["episodes"], cfg["protocol_settings"].get("min_fg_pixels", 0))
        if key not in self._episodes:
            lst = sample_episodes(
                self.dataset(), cfg["fold"], cfg["shot"], cfg["episodes"], cfg["seeds"]["episodes"],
                split="val", min_fg_pixels=key[-1],
            )
            path = self.out / "episodes" / f"{lst.hash[:16]}.json"
            if not path.exists():
                lst.save(path)
            self._episodes[key] = lst
        return self._episodes[key]


def _is_decoder_file(path: Path) -> bool:
    """An fssbench decoder file (else a method's own released format, e.g. the HSNet authors').
    A file that cannot be read safely goes to ``load_decoder``, whose errors say what is wrong."""
    from fssbench.engine.checkpoint import DECODER_FORMAT

    from fssbench.backbones.weights import read_torch_file

    try:
        obj = read_torch_file(path)
    except UserError:  # explained by load_decoder
        return True
    return isinstance(obj, dict) and obj.get("format") == DECODER_FORMAT


# --------------------------------------------------------------------------------------------
# stages


def prepare_data(ctx: StageContext) -> None:
    """Dataset (generated when asked) and every pending run's frozen episode list."""
    r = ctx.runner
    data = r.dataset()
    for e in ctx.plan.pending_evaluations:
        r.episode_list(e.run)
        if e.run.config["supports"] != "own":  # the control's supports come from other classes' images
            check_class_shown(data, episode_images(r.episode_specs(e.run)), f"{data.name} fold {e.run.config['fold']} control episodes")
    # Every image a training may draw (its list and its model-selection list), before any training starts.
    for fold in dict.fromkeys(d.run.config["fold"] for d in ctx.plan.pending_decoders):
        for split in ("trn", "baseval"):
            check_class_shown(data, ((x.name, x.class_id) for x in data.entries(fold, split)), f"{data.name} fold {fold} '{split}' list")


def build_backbones(ctx: StageContext) -> None:
    """Every backbone of the pending work, before any method is seeded."""
    for name in ctx.plan.backbones():
        ctx.runner.backbone(name)


def check_released(ctx: StageContext) -> None:
    """Read and check each released decoder file against its method before any other work."""
    seen: set[str] = set()
    for e in ctx.plan.pending_evaluations:
        ckpt = e.run.config.get("checkpoint")
        if ckpt and ckpt not in seen:
            seen.add(ckpt)
            method = ctx.runner.make_method(e.run, e.run.config["train_backbone"])
            ctx.runner.load_decoder_into(method, e.run)


def generate_aux(ctx: StageContext) -> None:
    """Every auxiliary image the pending runs need, generated into the cache once (resumable)."""
    r = ctx.runner
    by_sup: dict[int, tuple[Any, list]] = {}  # one supplier per aux config (SuiteRunner.aux_supplier)
    for e in ctx.plan.pending_evaluations:
        if e.run.config.get("aux") and not e.run.config.get("incompatible"):
            sup = r.aux_supplier(e.run)
            by_sup.setdefault(id(sup), (sup, []))[1].extend(r.episode_specs(e.run))
    for sup, specs in by_sup.values():
        todo = sup.pending(specs)
        if not todo:
            continue
        task = ctx.prog.add_task(escape(f"aux {sup.config['backend']} {sup.condition}"), total=len(todo))
        t0 = time.time()
        made = sup.generate(specs, on_progress=lambda n: ctx.prog.advance(task, n))
        ctx.prog.remove_task(task)
        ctx.stats["aux_generated"] = ctx.stats.get("aux_generated", 0) + made
        stand_in = " (offline stand-in, not a diffusion model)" if sup.config["backend"] == "offline" else ""
        ctx.say(f"generated {made} auxiliary images, {sup.condition}, {sup.config['backend']}{stand_in} ({time.time() - t0:.0f}s)")


def train_and_evaluate(ctx: StageContext) -> None:
    """Every pending decoder trained once and every pending run evaluated, as one dependency graph
    (``fssbench.executors``) on the runner's executor: an evaluation starts as soon as its decoder
    is trained, the longest trainings first; one result file per run.

    With ``eval.shards: N`` a run's episodes are split into N contiguous parts evaluated as separate
    tasks (each on its own worker), written as they finish, and merged in episode order into the
    run's result once all are there: the same records and metrics as one worker, and a killed run
    keeps its finished parts."""
    r = ctx.runner
    graph = r.graph(ctx.plan)
    runs = {e.run.run_id: e.run for e in ctx.plan.pending_evaluations}
    overall = ctx.prog.add_task("runs", total=len(runs))
    queued = {t.task_id for t in graph}
    left = {rid: {t for t in tids if t in queued} for rid, tids in graph.merges.items()}  # parts still to do
    for rid, tids in graph.merges.items():
        if not left[rid]:  # every part survived an earlier, interrupted run
            _merge(r, runs[rid], len(tids))
            ctx.stats["evaluated"] += 1
            ctx.prog.advance(overall)

    def done(task: Any) -> None:
        if task.kind == "train":
            ctx.stats["trained"] += 1
            return
        rid = task.run.run_id
        if task.part is not None:
            left[rid].discard(task.task_id)
            if left[rid]:
                return
            _merge(r, task.run, task.part[1])
        ctx.stats["evaluated"] += 1
        ctx.prog.advance(overall)

    r.executor.run(ctx, graph, done)


DEFAULT_STAGES: tuple[Stage, ...] = (prepare_data, build_backbones, check_released, generate_aux, train_and_evaluate)


def _train(ctx: StageContext, decoder_id: str, run: Run) -> None:
    from fssbench.engine.train import train

    r = ctx.runner
    cfg = run.config
    tcfg = TrainConfig(**run.train_config)
    method = r.make_method(run, cfg["train_backbone"])
    out = r.decoder_dir(decoder_id)
    task = ctx.prog.add_task(escape(f"train {decoder_id}"), total=tcfg.epochs * tcfg.episodes_per_epoch)
    summary = train(
        method,
        r.dataset(),
        cfg["fold"],
        r.protocol(run),
        tcfg,
        out,
        seed=cfg["seeds"]["train"],
        shot=tcfg.shot,
        kind=tcfg.kind,
        val_episodes=tcfg.val_episodes,
        device=r.device,
        on_step=lambda n: ctx.prog.advance(task, n),
    )
    ctx.prog.remove_task(task)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun (DDP) rank 0 writes the files
        return
    meta = {
        "decoder_id": decoder_id,
        "method": cfg["method"],
        "training_options": type(method).training_options(cfg["method_options"]),
        "train_backbone": cfg["train_backbone"],
        "train_config": asdict(tcfg),
        # strict JSON: a validation that never gave a finite score is null, not NaN
        "summary": {k: (None if isinstance(v, float) and v != v else v) for k, v in asdict(summary).items()},
        "environment": environment() | {"device": str(r.device), "torch_threads": torch.get_num_threads(),
                                         "world_size": int(os.environ.get("WORLD_SIZE", "1"))},
    }
    atomic_write_text(out / "decoder.json", json.dumps(meta, indent=1) + "\n")
    best = f"{summary.best_val_miou:.1f} at epoch {summary.best_epoch}" if summary.best_epoch >= 0 else "n/a (no finite validation score)"
    ctx.say(f"trained {decoder_id}: best base-val mIoU {best} ({summary.seconds:.0f}s)")


def _backbone_provenance(bb: Any) -> dict[str, Any]:
    path = getattr(bb, "weights_path", None)
    return {
        "name": bb.name,
        "pretraining": bb.pretraining,
        "weights": None if path is None else str(path),
        "sha256": None if path is None else sha256_file(path),
    }


def n_shards(r: "SuiteRunner", run: Run) -> int:
    """``eval.shards`` for this run (never more than its episodes; an incompatible cell is one)."""
    if run.config.get("incompatible"):
        return 1
    return max(1, min(int(r.suite.eval.get("shards", 1)), int(run.config["episodes"])))


def shard_bounds(n_items: int, i: int, n: int) -> tuple[int, int]:
    """Episodes ``[lo, hi)`` of shard ``i`` of ``n``: contiguous blocks in episode order."""
    return n_items * i // n, n_items * (i + 1) // n


def part_file(out: Path, run_id: str, i: int, n: int) -> Path:
    return out / "parts" / run_id / f"{i}-of-{n}.json"


def _evaluate(ctx: StageContext, run: Run, part: tuple[int, int] | None = None) -> RunResult | None:
    """Evaluate a run and write its result file; with ``part = (i, n)`` evaluate only shard ``i`` of
    ``n`` and write that part's records (``parts/<run_id>/i-of-n.json``; :func:`_merge` makes the
    result once every part is there)."""
    from fssbench.engine.evaluate import evaluate

    r = ctx.runner
    cfg = run.config
    started = time.time()
    if cfg.get("incompatible"):  # an explicit cell: nothing to evaluate, and the reason kept
        result = RunResult(
            run_id=run.run_id,
            suite=r.suite.name,
            config=cfg | {"profile": r.suite.profile, "suite_file": str(r.suite.source)},
            episode_hash=r.episode_list(run).hash,
            metrics={},
            records=[],
            provenance=environment(),
            status="incompatible",
            reason=cfg["incompatible"],
        )
        result.save(r.out)
        return result
    method = r.make_method(run, cfg["train_backbone"])
    decoder = r.load_decoder_into(method, run)
    if cfg["eval_backbone"] != cfg["train_backbone"]:
        method.set_backbone(r.backbone(cfg["eval_backbone"]))
    method.to(r.device)
    lst = r.episode_list(run)
    specs = r.episode_specs(run)
    n_art = int(r.suite.eval.get("artefacts", 0))
    lo, hi = shard_bounds(len(specs), *part) if part else (0, len(specs))
    specs, n_art = specs[lo:hi], max(0, min(n_art - lo, hi - lo))
    aux = r.aux_supplier(run, keep_controls=n_art)
    what = f"eval {run.run_id}" + (f" [{part[0] + 1}/{part[1]}]" if part else "")
    task = ctx.prog.add_task(escape(what), total=len(specs))
    from fssbench.backbones.cache import feature_cache

    cache_before = r.feature_cache.stats.as_dict()
    with feature_cache(r.feature_cache):
        out = evaluate(
            method,
            r.dataset(),
            specs,
            cfg["fold"],
            cfg["kind"],
            r.protocol(run),
            batch_size=int(r.suite.eval.get("batch_size", 8)),
            device=r.device,
            sampling_seed=cfg["seeds"]["sampling"],
            class_ids=r.dataset().fold_classes(cfg["fold"]),
            artefacts=n_art,
            n_boot=int(r.suite.eval.get("n_boot", 1000)),
            on_progress=lambda n: ctx.prog.advance(task, n),
            extend=None if aux is None else aux.extend,
            episode_extras=None if aux is None else (lambda eid: {"aux_fallbacks": float(aux.fallbacks.get(eid, 0))}),
            episode_artefacts=None if aux is None else (lambda eid: {"aux_control": aux.controls[eid]} if eid in aux.controls else {}),
            compute_metrics=part is None,
        )
    ctx.prog.remove_task(task)
    aux_summary = None if aux is None else aux.summary([s.episode_id for s in specs])
    cls = type(method)
    env = environment() | {
        "started": started,
        "finished": time.time(),
        "eval_seconds": out.seconds,
        "device": str(r.device),
        "precision": "bf16-autocast" if r.device.type == "cuda" else "fp32",
        "torch_threads": torch.get_num_threads(),
        "autocast": "bfloat16" if r.device.type == "cuda" else None,
        "eval_options": {k: cfg["method_options"].get(k) for k in sorted(cls.eval_options)},
        "backbones": {
            "train": _backbone_provenance(r.backbone(cfg["train_backbone"])),
            "eval": _backbone_provenance(r.backbone(cfg["eval_backbone"])),
        },
        "trainable_parameters": sum(p.numel() for p in method.parameters()),
        "feature_cache": _cache_delta(cache_before, r.feature_cache.stats.as_dict(), r.feature_cache.max_bytes),
    }
    if part is not None:
        path = part_file(r.out, run.run_id, *part)
        if out.artefacts:
            save_artefacts(path.with_suffix(".npz"), out.artefacts)
        body = {"part": list(part), "records": [x.to_dict() for x in out.records], "provenance": env,
                "decoder": decoder, "aux": aux_summary}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(body) + "\n")
        return None
    if aux_summary is not None:
        out.metrics["aux"] = aux_summary
    return _write_result(r, run, lst.hash, out.records, out.metrics, env, decoder, out.artefacts)


def _cache_delta(before: dict[str, Any], after: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """This evaluation's share of the process's feature-cache counters (hits, misses, backbone seconds)."""
    out: dict[str, Any] = {k: after[k] - before[k] for k in ("hits", "misses", "stored")}
    out["backbone_seconds"] = round(after["backbone_seconds"] - before["backbone_seconds"], 3)
    out["max_gb"] = round(max_bytes / 2**30, 3)
    return out


def _write_result(r: "SuiteRunner", run: Run, episode_hash: str, records: list, metrics: dict, env: dict,
                  decoder: dict, artefacts: dict) -> RunResult:
    if artefacts:
        art_path = r.out / "artefacts" / f"{run.run_id}.npz"
        save_artefacts(art_path, artefacts)
        env["artefacts"] = str(art_path.relative_to(r.out))
    result = RunResult(
        run_id=run.run_id,
        suite=r.suite.name,
        config=run.config | {"profile": r.suite.profile, "suite_file": str(r.suite.source)},
        episode_hash=episode_hash,
        metrics=metrics,
        records=records,
        provenance=env,
        decoder=decoder,
    )
    result.save(r.out)
    return result


def _merge(r: "SuiteRunner", run: Run, n: int) -> RunResult:
    """The result of a sharded run from its ``n`` parts: records in episode order, metrics (and
    intervals) computed once from all of them, exactly as one worker would have; parts removed."""
    from fssbench.engine.evaluate import summarize
    from fssbench.metrics import EpisodeRecord

    parts = [json.loads(part_file(r.out, run.run_id, i, n).read_text()) for i in range(n)]
    records = [EpisodeRecord.from_dict(x) for p in parts for x in p["records"]]
    cfg = run.config
    metrics = summarize(records, class_ids=r.dataset().fold_classes(cfg["fold"]), n_boot=int(r.suite.eval.get("n_boot", 1000)))
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
        f = part_file(r.out, run.run_id, i, n).with_suffix(".npz")
        if f.is_file():
            arts.update(read_artefacts(f))
    result = _write_result(r, run, r.episode_list(run).hash, records, metrics, env, parts[0]["decoder"], arts)
    import shutil

    shutil.rmtree(r.out / "parts" / run.run_id, ignore_errors=True)
    return result


__all__ = [
    "DEFAULT_STAGES",
    "StageContext",
    "SuiteRunner",
    "build_backbones",
    "check_released",
    "filter_runs",
    "generate_aux",
    "prepare_data",
    "resolve_device",
    "result_file",
    "train_and_evaluate",
]
