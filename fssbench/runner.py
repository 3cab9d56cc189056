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
   result file each, as a dependency graph of tasks (``fssbench.executors``) on the executor the
   runner is handed (``fssbench.executors.get_executor``): ``local`` (this machine), ``ray`` or
   ``slurm``.

The runner orchestrates; it holds no work of its own. The process's dataset, backbones and episode
lists are its :class:`~fssbench.workspace.Workspace`; training, evaluating and merging are
``fssbench.work`` (called by every executor's tasks through ``fssbench.executors.task``).

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

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from rich.markup import escape

from fssbench.console import console, progress
from fssbench.episodes import check_class_shown, episode_images
from fssbench.errors import Interrupted, UserError
from fssbench.executors.base import ExecutionContext, Executor
from fssbench.executors.graph import Graph, build_graph
from fssbench.paths import writable_dir
from fssbench.plan import Plan, is_done, make_plan, part_file
from fssbench.suite import Run, Suite
from fssbench.work import merge_parts
from fssbench.workers import default_workers
from fssbench.workspace import Workspace, resolve_device

def filter_runs(runs: list[Run], only: str | None) -> list[Run]:
    """``--only``: comma-separated ``key=value`` terms (all must match) or a substring of the run id.

    A filter that matches nothing is an error naming what was there to match (a typo must not
    silently run nothing)."""
    if not only:
        return runs
    terms = [t.strip() for t in only.split(",") if t.strip()]
    out = []
    for r in runs:
        cfg = r.config.as_dict()
        ok = True
        for t in terms:
            if "=" in t:
                k, v = (s.strip() for s in t.split("=", 1))
                if k not in cfg:
                    raise UserError(f"--only: unknown key '{k}' (keys: {', '.join(sorted(cfg))})")
                if str(cfg[k]) != v:
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
                values[k] = sorted({str(r.config.as_dict()[k]) for r in runs})
        hint = "; ".join(f"{k} is one of {', '.join(v)}" for k, v in values.items()) or f"run ids look like {runs[0].run_id}"
        raise UserError(f"--only '{only}' matches none of the {len(runs)} runs ({hint}); fix the filter")
    return out


@dataclass
class StageContext:
    """What a stage sees: the runner (its workspace, executor, settings), the plan, the progress
    display and counters."""

    runner: "SuiteRunner"
    plan: Plan
    prog: Any
    say: Callable[[str], None]
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def workspace(self) -> Workspace:
        return self.runner.workspace


Stage = Callable[[StageContext], None]


class SuiteRunner:
    def __init__(
        self,
        suite: Suite,
        results_dir: str | Path | None = None,
        *,
        executor: Executor,
        device: str | None = None,
        weights_dir: str | Path | None = None,
        stages: Sequence[Stage] | None = None,
        workers: int | None = None,
        resources: dict[str, Any] | None = None,
    ) -> None:
        """``executor``: where the tasks run (``fssbench.executors.get_executor``);
        ``resources``: per-task requests that override the suite's ``resources`` (command line)."""
        self.suite = suite
        self.out = Path(results_dir) if results_dir is not None else Path("results") / suite.name
        self.device_request = str(device or suite.eval.get("device") or "auto")
        """What was asked for (``auto`` stays ``auto`` for a cluster task: its node decides)."""
        self.workspace = Workspace(suite, self.out, resolve_device(device or suite.eval.get("device")), weights_dir)
        """This process's dataset, backbones, episode lists (``fssbench.workspace``)."""
        self.stages: list[Stage] = list(stages if stages is not None else DEFAULT_STAGES)
        self.workers = default_workers() if workers is None else max(1, int(workers))
        self.executor = executor
        self.resources = dict(resources or {})

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

    def graph(self, plan: Plan) -> Graph:
        """The plan's pending work as tasks (``fssbench.executors.graph``), shards and resources
        (the suite's, then the command line's) filled in."""
        return build_graph(
            plan, self.workspace.n_shards, lambda run, i, n: part_file(self.out, run.run_id, i, n).is_file(),
            self.suite.resources, self.resources,
        )

    def execution(self, prog: Any, say: Callable[[str], None], device_request: str | None = None) -> ExecutionContext:
        """What the executor is handed: this process's workspace, the display, the settings a
        remote task needs (``device_request``: what a cluster task asks its node for)."""
        return ExecutionContext(self.workspace, prog, say, self.workers, device_request or self.device_request)

    # --- work ------------------------------------------------------------------------
    def run(self, runs: list[Run], on_event: Callable[[str], None] | None = None) -> dict[str, int]:
        say = on_event or (lambda s: console.print(escape(s), highlight=False))
        plan = self.plan(runs)
        pending = plan.pending_evaluations
        stats = {"total": len(runs), "skipped": len(runs) - len(pending), "trained": 0, "evaluated": 0}
        if not pending:
            say(f"all {len(runs)} runs already finished in {self.out}")
            return stats
        writable_dir(self.out, "results folder")
        try:
            with progress() as prog:
                ctx = StageContext(self, plan, prog, say, stats)
                for stage in self.stages:
                    stage(ctx)
        except KeyboardInterrupt:
            finished = sum(is_done(self.out, r) for r in runs)
            raise Interrupted(
                f"interrupted: {finished} of {len(runs)} runs are finished and kept in {self.out} "
                f"({stats['trained']} decoders trained now; a decoder in training resumes from its last epoch); "
                "run the same command again to continue"
            ) from None
        return stats


# --------------------------------------------------------------------------------------------
# stages


def prepare_data(ctx: StageContext) -> None:
    """Dataset (generated when asked) and every pending run's frozen episode list."""
    ws = ctx.workspace
    data = ws.dataset()
    for e in ctx.plan.pending_evaluations:
        ws.episode_list(e.run)
        if e.run.config.supports != "own":  # the control's supports come from other classes' images
            check_class_shown(data, episode_images(ws.episode_specs(e.run)), f"{data.name} fold {e.run.config.fold} control episodes")
    # Every image a training may draw (its list and its model-selection list), before any training starts.
    for fold in dict.fromkeys(d.run.config.fold for d in ctx.plan.pending_decoders):
        for split in ("trn", "baseval"):
            check_class_shown(data, ((x.name, x.class_id) for x in data.entries(fold, split)), f"{data.name} fold {fold} '{split}' list")


def build_backbones(ctx: StageContext) -> None:
    """Every backbone of the pending work, before any method is seeded."""
    for name in ctx.plan.backbones():
        ctx.workspace.backbone(name)


def check_released(ctx: StageContext) -> None:
    """Read and check each released decoder file against its method before any other work."""
    seen: set[str] = set()
    for e in ctx.plan.pending_evaluations:
        ckpt = e.run.config.checkpoint
        if ckpt and ckpt not in seen:
            seen.add(ckpt)
            method = ctx.workspace.make_method(e.run, e.run.config.train_backbone)
            ctx.workspace.load_decoder_into(method, e.run)


def generate_aux(ctx: StageContext) -> None:
    """Every auxiliary image the pending runs need, generated into the cache once (resumable)."""
    ws = ctx.workspace
    by_sup: dict[int, tuple[Any, list]] = {}  # one supplier per aux config (Workspace.aux_supplier)
    for e in ctx.plan.pending_evaluations:
        if e.run.config.aux and not e.run.config.incompatible:
            sup = ws.aux_supplier(e.run)
            by_sup.setdefault(id(sup), (sup, []))[1].extend(ws.episode_specs(e.run))
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
            merge_parts(r.workspace, runs[rid], len(tids))
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
            merge_parts(r.workspace, task.run, task.part[1])
        ctx.stats["evaluated"] += 1
        ctx.prog.advance(overall)

    r.executor.run(r.execution(ctx.prog, ctx.say), graph, done)


DEFAULT_STAGES: tuple[Stage, ...] = (prepare_data, build_backbones, check_released, generate_aux, train_and_evaluate)


__all__ = [
    "DEFAULT_STAGES",
    "StageContext",
    "SuiteRunner",
    "build_backbones",
    "check_released",
    "filter_runs",
    "generate_aux",
    "prepare_data",
    "train_and_evaluate",
]
