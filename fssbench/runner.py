"""Suite runner: expand a suite, train each decoder once, evaluate every run, store results.

Crash safety: every file is written to a temporary name and renamed into place; a finished run is
exactly a readable ``results/<suite>/<run_id>.json``; a finished decoder is exactly a
``decoders/<decoder_id>/decoder.json`` marker next to its ``best.pt``. A run killed at any point
(even SIGKILL) therefore resumes on the next ``fssbench run``: finished runs are skipped, a
half-trained decoder resumes from its last epoch, and nothing is computed twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch

from fssbench.console import console, progress
from fssbench.episodes import EpisodeList, atomic_write_text, sample_episodes
from fssbench.errors import UserError
from fssbench.methods import Method, TrainConfig, create_method
from fssbench.protocols import Protocol
from fssbench.results import RunResult, environment, result_path
from fssbench.suite import BACKBONE_VARIANTS, Run, Suite, split_backbone


def resolve_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{name}' requested but CUDA is not available; use --device cpu")
    return torch.device(name)


def filter_runs(runs: list[Run], only: str | None) -> list[Run]:
    """``--only``: comma-separated ``key=value`` terms (all must match) or a substring of the run id."""
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
    return out


class SuiteRunner:
    def __init__(self, suite: Suite, results_dir: str | Path | None = None, *, device: str | None = None) -> None:
        self.suite = suite
        self.out = Path(results_dir) if results_dir is not None else Path("results") / suite.name
        self.device = resolve_device(device or suite.eval.get("device"))
        self._backbones: dict[str, Any] = {}
        self._dataset = None

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
                console.print(f"generating the embedded synthetic world in {root} ...")
                generate(root, seed=int(gen.get("seed", 0)), size=str(gen.get("size", "default")), force=True)
            opts = d.get("options") or {}
            self._dataset = CachedDataset(get_dataset(d["name"], root, split_dir=d.get("split_dir"), **opts))
        return self._dataset

    def backbone(self, name: str):
        if name not in self._backbones:
            from fssbench.backbones import create_backbone

            base, variant = split_backbone(name)
            self._backbones[name] = create_backbone(base, weights=BACKBONE_VARIANTS[variant]).to(self.device)
        return self._backbones[name]

    def protocol(self, run: Run) -> Protocol:
        return Protocol(**run.config["protocol_settings"])

    # --- status --------------------------------------------------------------------
    def is_done(self, run: Run) -> bool:
        path = result_path(self.out, run.run_id)
        if not path.exists():
            return False
        try:
            json.loads(path.read_text())
            return True
        except ValueError:
            return False

    def foreign_results(self, runs: list[Run]) -> list[Path]:
        """Result files in the results folder that are not runs of ``runs`` (the full expansion):
        left by an earlier version of the suite or another profile. Reports read them too."""
        if not self.out.is_dir():
            return []
        ids = {r.run_id for r in runs}
        return sorted(p for p in self.out.glob("*.json") if not p.name.startswith(".") and p.stem not in ids)

    def decoder_dir(self, decoder_id: str) -> Path:
        return self.out / "decoders" / decoder_id

    def decoder_done(self, decoder_id: str) -> bool:
        return (self.decoder_dir(decoder_id) / "decoder.json").exists()

    # --- work ------------------------------------------------------------------------
    def run(self, runs: list[Run], on_event: Callable[[str], None] | None = None) -> dict[str, int]:
        say = on_event or (lambda s: console.print(s))
        pending = [r for r in runs if not self.is_done(r)]
        stats = {"total": len(runs), "skipped": len(runs) - len(pending), "trained": 0, "evaluated": 0}
        if not pending:
            say(f"all {len(runs)} runs already finished in {self.out}")
            return stats
        self.out.mkdir(parents=True, exist_ok=True)
        decoders: dict[str, Run] = {}
        for r in pending:
            if r.decoder_id and not self.decoder_done(r.decoder_id):
                decoders.setdefault(r.decoder_id, r)
        with progress() as prog:
            for did, r in decoders.items():
                self._train(did, r, prog, say)
                stats["trained"] += 1
            overall = prog.add_task("runs", total=len(pending))
            for r in pending:
                self._evaluate(r, prog)
                stats["evaluated"] += 1
                prog.advance(overall)
        return stats

    def _make_method(self, run: Run, backbone_name: str) -> Method:
        """Build the method with its parameters initialised from the run's seed (same seed, same init).

        The backbone is fetched first: building one draws from the RNG (random init before its
        weights load), so seeding before it would make the method's init depend on whether an
        earlier run of the suite had already built that backbone.
        """
        from fssbench.engine.train import seed_everything

        cfg = run.config
        backbone = self.backbone(backbone_name)
        seed_everything(cfg["seed"])
        return create_method(cfg["method"], backbone, **cfg["method_options"]).to(self.device)

    def _train(self, decoder_id: str, run: Run, prog, say: Callable[[str], None]) -> None:
        from fssbench.engine.train import train

        cfg = run.config
        tcfg = TrainConfig(**run.train_config)
        method = self._make_method(run, cfg["train_backbone"])
        out = self.decoder_dir(decoder_id)
        task = prog.add_task(f"train {decoder_id}", total=tcfg.epochs * tcfg.episodes_per_epoch)
        summary = train(
            method,
            self.dataset(),
            cfg["fold"],
            self.protocol(run),
            tcfg,
            out,
            seed=cfg["seed"],
            shot=tcfg.shot,
            kind=tcfg.kind,
            val_episodes=tcfg.val_episodes,
            device=self.device,
            on_step=lambda n: prog.advance(task, n),
        )
        prog.remove_task(task)
        meta = {"decoder_id": decoder_id, "train_config": asdict(tcfg), "summary": asdict(summary), "environment": environment()}
        atomic_write_text(out / "decoder.json", json.dumps(meta, indent=1) + "\n")
        say(
            f"trained {decoder_id}: best base-val mIoU {summary.best_val_miou:.1f} at epoch {summary.best_epoch}"
            f" ({summary.seconds:.0f}s)"
        )

    def episode_list(self, run: Run) -> EpisodeList:
        cfg = run.config
        lst = sample_episodes(
            self.dataset(),
            cfg["fold"],
            cfg["shot"],
            cfg["episodes"],
            cfg["seed"],
            split="val",
            min_fg_pixels=cfg["protocol_settings"].get("min_fg_pixels", 0),
        )
        path = self.out / "episodes" / f"{lst.hash[:16]}.json"
        if not path.exists():
            lst.save(path)
        return lst

    def _evaluate(self, run: Run, prog) -> RunResult:
        from fssbench.engine.evaluate import evaluate

        cfg = run.config
        started = time.time()
        method = self._make_method(run, cfg["train_backbone"])
        decoder: dict[str, Any] = {}
        if run.decoder_id:
            ddir = self.decoder_dir(run.decoder_id)
            state = torch.load(ddir / "best.pt", map_location="cpu", weights_only=True)
            method.load_trainable_state(state)
            decoder = {"decoder_id": run.decoder_id, "checkpoint": str(ddir / "best.pt")}
            meta = ddir / "decoder.json"
            if meta.exists():
                decoder["summary"] = json.loads(meta.read_text())["summary"]
        if cfg["eval_backbone"] != cfg["train_backbone"]:
            method.set_backbone(self.backbone(cfg["eval_backbone"]))
        method.to(self.device)
        lst = self.episode_list(run)
        task = prog.add_task(f"eval {run.run_id}", total=len(lst.episodes))
        out = evaluate(
            method,
            self.dataset(),
            lst.episodes,
            cfg["fold"],
            cfg["kind"],
            self.protocol(run),
            batch_size=int(self.suite.eval.get("batch_size", 8)),
            device=self.device,
            on_progress=lambda n: prog.advance(task, n),
        )
        prog.remove_task(task)
        env = environment()
        env |= {"started": started, "finished": time.time(), "eval_seconds": out.seconds}
        result = RunResult(
            run_id=run.run_id,
            suite=self.suite.name,
            config=cfg | {"profile": self.suite.profile, "suite_file": str(self.suite.source)},
            episode_hash=lst.hash,
            metrics=out.metrics,
            records=out.records,
            provenance=env,
            decoder=decoder,
        )
        result.save(self.out)
        return result
