"""Planning a suite: which decoders to train, which evaluations to run, in which order.

Planning is pure bookkeeping over the expanded runs and the results folder: it builds nothing
and computes nothing. The runner's stages (``fssbench.runner``) then *execute* a plan: prepare
data, build backbones, check released checkpoints, train decoders, evaluate. Keeping the two apart
lets a new stage (auxiliary supports) or another executor (a cluster) consume the same plan.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from fssbench.suite import Run


@dataclass(frozen=True)
class DecoderTask:
    """One decoder to train, with the run whose configuration defines it."""

    decoder_id: str
    run: Run
    done: bool


@dataclass(frozen=True)
class EvalTask:
    run: Run
    done: bool


@dataclass
class Plan:
    """What a ``fssbench run`` will do, in order."""

    out: Path
    runs: list[Run]
    decoders: list[DecoderTask] = field(default_factory=list)
    evaluations: list[EvalTask] = field(default_factory=list)

    @property
    def pending_decoders(self) -> list[DecoderTask]:
        return [d for d in self.decoders if not d.done]

    @property
    def pending_evaluations(self) -> list[EvalTask]:
        return [e for e in self.evaluations if not e.done]

    def backbones(self) -> list[str]:
        """Every backbone the pending work needs (training and evaluation), in first-use order."""
        names: list[str] = []
        for d in self.pending_decoders:
            names.append(d.run.config.train_backbone)
        for e in self.pending_evaluations:
            if not e.run.config.incompatible:
                names += [e.run.config.train_backbone, e.run.config.eval_backbone]
        return list(dict.fromkeys(names))

    def decoder_status(self, run: Run) -> str:
        """``-`` (no decoder: zero-training or released), ``trained`` or ``to train``."""
        if run.config.checkpoint:
            return f"released {Path(run.config.checkpoint).name}"
        if not run.decoder_id:
            return "-"
        return "trained" if decoder_done(self.out, run.decoder_id) else "to train"


def result_file(out: Path, run_id: str) -> Path:
    return out / f"{run_id}.json"


def is_done(out: Path, run: Run) -> bool:
    """A run is finished exactly when its result file exists and parses."""
    path = result_file(out, run.run_id)
    if not path.is_file():
        return False
    try:
        json.loads(path.read_text())
        return True
    except ValueError:
        return False


def decoder_dir(out: Path, decoder_id: str) -> Path:
    return out / "decoders" / decoder_id


def decoder_done(out: Path, decoder_id: str) -> bool:
    return (decoder_dir(out, decoder_id) / "decoder.json").is_file()


def part_file(out: Path, run_id: str, i: int, n: int) -> Path:
    """Where shard ``i`` of ``n`` of a sharded run keeps its records until the run is merged."""
    return out / "parts" / run_id / f"{i}-of-{n}.json"


def make_plan(runs: list[Run], out: str | Path) -> Plan:
    """Order the work: every decoder a pending run needs (once each), then the evaluations."""
    out = Path(out)
    plan = Plan(out=out, runs=list(runs))
    seen: set[str] = set()
    for r in runs:
        done = is_done(out, r)
        plan.evaluations.append(EvalTask(r, done))
        if not done and r.decoder_id and not r.config.incompatible and r.decoder_id not in seen:
            seen.add(r.decoder_id)
            plan.decoders.append(DecoderTask(r.decoder_id, r, decoder_done(out, r.decoder_id)))
    return plan

