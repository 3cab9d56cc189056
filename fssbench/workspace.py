"""What one process holds to do a suite's work: the dataset, backbones, episode lists, auxiliary
suppliers and the feature cache, built on first use and shared by every task the process runs.

The runner (``fssbench.runner``) prepares one before any task; a remote task
(``fssbench.executors.task``) builds its own from the suite file. The work itself
(``fssbench.work``) reads everything through it, so a task computes the same numbers wherever it
runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape

from fssbench.console import console
from fssbench.dispatch import DEVICE_ENV, auto_device
from fssbench.errors import UserError
from fssbench.episodes import EpisodeList, sample_episodes
from fssbench.methods import Method, create_method
from fssbench.plan import decoder_dir, decoder_done
from fssbench.protocols import Protocol
from fssbench.results import sha256_file
from fssbench.suite import BACKBONE_VARIANTS, Run, Suite, canonical_hash, split_backbone

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


DEFAULT_FEATURE_CACHE_GB = 1.0
"""``eval.feature_cache_gb`` when a suite does not say: per process (each CPU worker has its own)."""


class Workspace:
    """A suite's per-process resources against one results folder, on one device."""

    def __init__(self, suite: Suite, out: str | Path, device: torch.device, weights_dir: str | Path | None = None) -> None:
        from fssbench.backbones.cache import FeatureCache

        self.suite = suite
        self.out = Path(out)
        self.device = device
        self.weights_dir = weights_dir
        self.feature_cache = FeatureCache(int(float(suite.eval.get("feature_cache_gb", DEFAULT_FEATURE_CACHE_GB)) * 2**30))
        """Backbone features shared by this process's evaluations (``fssbench.backbones.cache``)."""
        self._backbones: dict[str, Any] = {}
        self._dataset: Any = None
        self._episodes: dict[tuple, EpisodeList] = {}
        self._aux: dict[str, Any] = {}

    # --- data ----------------------------------------------------------------------------
    def dataset(self) -> Any:
        """The suite's dataset (the embedded world generated first when asked), images cached."""
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

    def protocol(self, run: Run) -> Protocol:
        return Protocol(**run.config.protocol_settings)

    def episode_list(self, run: Run) -> EpisodeList:
        """The run's frozen episode list (sampled once per process, saved under ``episodes/``)."""
        cfg = run.config
        key = (cfg.fold, cfg.shot, cfg.episodes, cfg.seeds["episodes"], cfg.protocol_settings.get("min_fg_pixels", 0))
        if key not in self._episodes:
            lst = sample_episodes(
                self.dataset(), cfg.fold, cfg.shot, cfg.episodes, cfg.seeds["episodes"],
                split="val", min_fg_pixels=key[-1],
            )
            path = self.out / "episodes" / f"{lst.hash[:16]}.json"
            if not path.exists():
                lst.save(path)
            self._episodes[key] = lst
        return self._episodes[key]

    def episode_specs(self, run: Run) -> list:
        """The run's episodes as evaluated: the frozen list, or its other-class control."""
        from fssbench.controls import other_class_specs

        cfg = run.config
        specs = self.episode_list(run).episodes
        if cfg.supports == "other-class":
            specs = other_class_specs(self.dataset(), specs, cfg.fold, cfg.seeds["episodes"])
        return specs

    # --- models --------------------------------------------------------------------------
    def backbone(self, name: str) -> Any:
        if name not in self._backbones:
            from fssbench.backbones import create_backbone

            base, variant = split_backbone(name)
            self._backbones[name] = create_backbone(
                base, weights=BACKBONE_VARIANTS[variant], weights_dir=self.weights_dir
            ).to(self.device)
        return self._backbones[name]

    def built_backbones(self) -> list[str]:
        """The backbones this process has built so far, in build order."""
        return list(self._backbones)

    def make_method(self, run: Run, backbone_name: str) -> Method:
        """Build the method with its parameters initialised from the run's training seed.

        The backbone is fetched first (the runner's ``build_backbones`` has normally built it
        already): building one draws from the RNG, so seeding before it would make the method's
        init depend on whether an earlier run had built that backbone.
        """
        from fssbench.engine.train import seed_everything

        cfg = run.config
        backbone = self.backbone(backbone_name)
        seed_everything(cfg.seeds["train"])
        return create_method(cfg.method, backbone, **cfg.method_options).to(self.device)

    def decoder_dir(self, decoder_id: str) -> Path:
        return decoder_dir(self.out, decoder_id)

    def decoder_done(self, decoder_id: str) -> bool:
        return decoder_done(self.out, decoder_id)

    def load_decoder_into(self, method: Method, run: Run) -> dict[str, Any]:
        """Load the run's trained or released decoder into ``method``; returns its provenance."""
        from fssbench.engine.checkpoint import load_decoder

        released = run.config.checkpoint
        if released:
            path = Path(released)
            if is_decoder_file(path):
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

    # --- auxiliary supports ----------------------------------------------------------------
    def aux_cache_dir(self) -> Path:
        """``aux.cache`` of the suite, else ``<results>/aux_cache``."""
        c = self.suite.aux.get("cache")
        return Path(c) if c else self.out / "aux_cache"

    def aux_supplier(self, run: Run, keep_controls: int = 0) -> Any:
        """The run's :class:`~fssbench.auxiliary.supplier.AuxSupplier` (``None`` without ``aux``);
        one per aux config, so the generator (a diffusion pipeline) is loaded once."""
        cfg = run.config.aux
        if not cfg:
            return None
        from fssbench.auxiliary.cache import AuxCache
        from fssbench.auxiliary.supplier import AuxSupplier
        from fssbench.backbones.weights import resolve_weights_dir

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

    # --- sharding ----------------------------------------------------------------------------
    def n_shards(self, run: Run) -> int:
        """``eval.shards`` for this run (never more than its episodes; an incompatible cell is one)."""
        if run.config.incompatible:
            return 1
        return max(1, min(int(self.suite.eval.get("shards", 1)), int(run.config.episodes)))


def is_decoder_file(path: Path) -> bool:
    """An fssbench decoder file (else a method's own released format, e.g. the HSNet authors').
    A file that cannot be read safely goes to ``load_decoder``, whose errors say what is wrong."""
    from fssbench.backbones.weights import read_torch_file
    from fssbench.engine.checkpoint import DECODER_FORMAT

    try:
        obj = read_torch_file(path)
    except UserError:  # explained by load_decoder
        return True
    return isinstance(obj, dict) and obj.get("format") == DECODER_FORMAT


__all__ = ["DEFAULT_FEATURE_CACHE_GB", "DEVICE_HELP", "Workspace", "is_decoder_file", "resolve_device"]
