"""Auxiliary supports as extra shots: settings, generation into the cache, and consumption.

How an episode gets its auxiliary shots (DifFSS's consumption, ``DifFSS-BAM``'s dataset):

* the auxiliary images belong to the episode's *first* real support: ``aux_shots`` images per
  (support, class), each from its own seed ``(aux seed, support, class, k)``;
* each is resized (bilinear) to that support's size and paired with that support's annotation of
  the episode's kind (the images are aligned with its mask), and appended after the real shots, so
  a 1-shot episode with ``aux_shots: 4`` reaches the method as a 5-shot episode;
* a missing pregenerated image is replaced by the first real support itself (the reference's
  fallback); the number of fallbacks per episode is kept in its record (``aux_fallbacks``) and
  summed in the result (``metrics.aux``).

Generation happens once, before evaluation, in the runner's ``generate_aux`` stage: every
(support, class) of every pending run is generated into the :class:`~fssbench.auxiliary.cache.AuxCache`
(skipping what is there), so methods that share episodes share the images and a killed generation
resumes. Auxiliary shots are part of a run's identity (its config ``aux``), never of a decoder's:
decoders are trained without them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from fssbench.auxiliary.cache import AuxCache, cache_key
from fssbench.auxiliary.conditions import CLASSICAL_EDGES, CONDITIONS, EdgeDetector, load_palette, make_condition, sobel_soft_edges
from fssbench.auxiliary.generators import (
    BACKENDS,
    REFERENCE_NEGATIVE,
    REFERENCE_PROMPT,
    AuxRequest,
    ControlNetGenerator,
    Generator,
    OfflineGenerator,
    PregeneratedSource,
)
from fssbench.auxiliary.hed import HED_FILE, find_hed, load_hed
from fssbench.episode import EpisodeSpec, RawEpisode, RawShot
from fssbench.errors import MissingFileError, UserError

EDGE_MODES = ("auto", "hed", "classical")

DEFAULTS: dict[str, Any] = {
    "backend": "offline",
    "aux_shots": 4,
    "seed": 0,
    "dir": None,  # pregenerated: the folder of <support>_<class>_<k>.jpg
    "edges": "auto",  # hed / scribble conditions: HED network when its weights are there, else classical
    "seg_palette": None,  # JSON {class id: [r, g, b]} for the mask condition
    "prompt": REFERENCE_PROMPT,
    "negative_prompt": REFERENCE_NEGATIVE,
    "guidance": 9.0,
    "steps": 20,
    "size": 512,
}
KEYS = frozenset(DEFAULTS) | {"cache"}


def check_settings(aux: Any, problems: list[str]) -> dict[str, Any]:
    """The suite's ``aux`` mapping with defaults filled in; one problem line per bad setting."""
    if aux is None:
        return dict(DEFAULTS)
    if not isinstance(aux, dict):
        problems.append("'aux' must be a mapping (backend, aux_shots, seed, ...)")
        return dict(DEFAULTS)
    for k in sorted(set(aux) - KEYS):
        problems.append(f"unknown key 'aux.{k}' (valid: {', '.join(sorted(KEYS))})")
    out = {**DEFAULTS, **aux}
    if out["backend"] not in BACKENDS:
        problems.append(f"'aux.backend' must be one of {', '.join(BACKENDS)}; got {out['backend']!r}")
    n = out["aux_shots"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        problems.append(f"'aux.aux_shots' must be a positive integer, got {n!r}")
    if isinstance(out["seed"], bool) or not isinstance(out["seed"], int):
        problems.append(f"'aux.seed' must be an integer, got {out['seed']!r}")
    if out["edges"] not in EDGE_MODES:
        problems.append(f"'aux.edges' must be one of {', '.join(EDGE_MODES)}; got {out['edges']!r}")
    if out["backend"] == "pregenerated" and not out["dir"]:
        problems.append("'aux.dir' must name the folder of pregenerated images (<support>_<class>_<k>.jpg) for backend pregenerated")
    return out


def hed_missing(weights_dir: Path | None) -> str:
    """The one line for ``aux.edges: hed`` without the HED weights file."""
    where = f"{weights_dir}/{HED_FILE}" if weights_dir else f"$FSSBENCH_WEIGHTS/{HED_FILE}"
    return f"aux edges: hed needs the HED weights at {where} (lllyasviel/Annotators); or set aux.edges: classical"


def settings_problems(settings: dict[str, Any], conditions: Sequence[str], weights_dir: str | Path | None) -> list[str]:
    """Missing files the suite's auxiliary supports need, one line each, before any work starts."""
    from fssbench.auxiliary.generators import controlnet_missing
    from fssbench.backbones.weights import resolve_weights_dir

    wdir = resolve_weights_dir(weights_dir)
    out: list[str] = []
    if settings["backend"] == "pregenerated" and settings.get("dir") and not Path(settings["dir"]).is_dir():
        out.append(f"aux backend pregenerated: folder {settings['dir']} not found; set aux.dir to the folder of <support>_<class id>_<k>.jpg images")
    if settings["backend"] == "controlnet" and wdir is None:
        from fssbench.auxiliary.generators import CONTROLNET_LAYOUT

        dirs = ", ".join(f"{CONTROLNET_LAYOUT[p]}/" for p in ["base", *dict.fromkeys(conditions)])
        out.append(f"aux backend controlnet needs local weights: pass --weights-dir DIR (or set $FSSBENCH_WEIGHTS) holding "
                   f"{dirs} (diffusers format); nothing is downloaded")
    elif settings["backend"] == "controlnet":
        for c in conditions:
            line = controlnet_missing(wdir, c)
            if line and line not in out:
                out.append(line)
    if settings.get("edges") == "hed" and any(c in ("hed", "scribble") for c in conditions) and find_hed(wdir) is None:
        out.append(hed_missing(wdir))
    pal = settings.get("seg_palette")
    if pal and "mask" in conditions and not Path(pal).is_file():
        out.append(f"aux seg_palette file {pal} not found; give a JSON file {{\"<class id>\": [r, g, b]}} or drop seg_palette")
    return out


def run_aux_config(settings: dict[str, Any], condition: str) -> dict[str, Any]:
    """What a run's config records of its auxiliary supports (part of the run id): the condition
    and every setting that changes the images or how they are used."""
    keep = ["backend", "aux_shots", "seed"]
    if settings["backend"] == "pregenerated":
        keep.append("dir")
    if settings["backend"] == "controlnet":
        keep += ["prompt", "negative_prompt", "guidance", "steps", "size"]
    if condition in ("hed", "scribble") and settings["backend"] != "pregenerated":
        keep.append("edges")
    if condition == "mask" and settings.get("seg_palette"):
        keep.append("seg_palette")
    return {"condition": condition, **{k: settings[k] for k in keep}}


def aux_seed(seed: int, support: str, class_id: int, k: int) -> int:
    """The seed of auxiliary image ``k`` of a (support, class): a function of these only."""
    s = int(hashlib.sha256(support.encode()).hexdigest()[:8], 16)
    return int(np.random.SeedSequence([int(seed), s, int(class_id), int(k)]).generate_state(1)[0])


def _resize(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if image.shape[:2] == hw:
        return image
    return np.asarray(Image.fromarray(image).resize((hw[1], hw[0]), Image.BILINEAR))


@dataclass
class AuxSupplier:
    """The auxiliary supports of one run config (``config["aux"]``) on one dataset."""

    config: dict[str, Any]
    dataset: Any
    cache: AuxCache
    weights_dir: Path | None = None
    device: str = "auto"
    fallbacks: dict[int, int] = field(default_factory=dict)
    controls: dict[int, np.ndarray] = field(default_factory=dict)
    keep_controls: int = 0
    generated: int = 0

    def __post_init__(self) -> None:
        c = self.config
        self.condition: str = c["condition"]
        if self.condition not in CONDITIONS:
            raise UserError(f"unknown aux condition '{self.condition}'; choose one of: none, {', '.join(CONDITIONS)}")
        self.n: int = int(c["aux_shots"])
        self._edges: EdgeDetector | None = None
        self.edges_name: str | None = None
        self._ident: dict[str, Any] | None = None
        self._edge_ident: str | None = None
        self._palette = load_palette(c.get("seg_palette"))
        backend = c["backend"]
        self.source: PregeneratedSource | None = None
        self.generator: Generator | None = None
        if backend == "pregenerated":
            self.source = PregeneratedSource(c["dir"])
        elif backend == "offline":
            self.generator = OfflineGenerator()
        elif backend == "controlnet":
            self.generator = ControlNetGenerator(
                self.weights_dir, self.condition, prompt=c["prompt"], negative_prompt=c["negative_prompt"],
                guidance=c["guidance"], steps=c["steps"], size=c["size"], device=self.device,
            )
        else:
            raise UserError(f"unknown aux backend '{backend}'; choose one of: {', '.join(BACKENDS)}")

    # --- the edge detector of the hed / scribble conditions ----------------------------------------
    def edges(self) -> EdgeDetector:
        if self._edges is None:
            mode = self.config.get("edges", "auto")
            path = find_hed(self.weights_dir)
            if mode == "hed" and path is None:
                raise MissingFileError(hed_missing(self.weights_dir))
            if mode != "classical" and path is not None:
                det = load_hed(path)
                self._edges, self.edges_name = det, det.name
            else:
                self._edges, self.edges_name = sobel_soft_edges, CLASSICAL_EDGES
        return self._edges

    def edge_identity(self) -> str | None:
        """The edge detector's name (and weights) when the condition uses one, else ``None``."""
        if self.condition == "mask":
            return None
        if self._edge_ident is None:
            self.edges()
            path = find_hed(self.weights_dir) if self.edges_name != CLASSICAL_EDGES else None
            if path is None:
                self._edge_ident = self.edges_name
            else:
                from fssbench.results import sha256_file

                self._edge_ident = f"{self.edges_name} sha256:{sha256_file(path)[:16]}"
        return self._edge_ident

    # --- one support ---------------------------------------------------------------------------------
    def seeds(self, support: str, class_id: int) -> list[int]:
        return [aux_seed(int(self.config["seed"]), support, class_id, k) for k in range(self.n)]

    def _identity(self) -> dict[str, Any]:
        """The generator's identity plus the condition's inputs (palette, edge detector); computed
        once (it may hash weights files)."""
        if self._ident is not None:
            return self._ident
        assert self.generator is not None
        ident = dict(self.generator.identity())
        if self.condition == "mask" and self._palette:
            ident["seg_palette"] = {str(k): list(v) for k, v in sorted(self._palette.items())}
        edges = self.edge_identity()
        if edges:
            ident["edges"] = edges
        self._ident = ident
        return ident

    def control(self, image: np.ndarray, mask: np.ndarray, class_id: int) -> np.ndarray:
        edges = self.edges() if self.condition != "mask" else sobel_soft_edges
        return make_condition(self.condition, image, mask, class_id, edges, self._palette)

    def keys(self, support: str, class_id: int) -> list[str]:
        ident = self._identity()
        return [cache_key(support, class_id, self.condition, ident, s) for s in self.seeds(support, class_id)]

    def images(self, support: str, class_id: int, *, generate: bool = True) -> list[np.ndarray | None]:
        """The ``aux_shots`` images of a (support, class) at their generated size (``None``: a
        missing pregenerated file). Generator backends read the cache and generate what is missing."""
        if self.source is not None:
            return [self.source.lookup(support, class_id, k) for k in range(self.n)]
        keys = self.keys(support, class_id)
        found = [self.cache.get(k) for k in keys]
        todo = [i for i, im in enumerate(found) if im is None]
        if todo and generate:
            assert self.generator is not None
            image = self.dataset.load_image(support)
            mask, _ = self.dataset.load_label(support, class_id)
            seeds = self.seeds(support, class_id)
            req = AuxRequest(
                support=support, class_id=class_id, class_name=self.dataset.class_names[class_id], image=image,
                mask=mask, condition=self.condition, control=self.control(image, mask, class_id),
                seeds=tuple(seeds[i] for i in todo),
            )
            made = self.generator.generate(req)
            if len(made) != len(todo):
                raise RuntimeError(f"aux backend {self.generator.backend} returned {len(made)} images for {len(todo)} seeds")
            for i, im in zip(todo, made):
                self.cache.put(keys[i], im)
                found[i] = im
            self.generated += len(todo)
        return found

    def pending(self, specs: Iterable[EpisodeSpec]) -> list[tuple[str, int]]:
        """The (first support, class) pairs of ``specs`` with an image not yet in the cache."""
        if self.source is not None:
            return []
        seen: dict[tuple[str, int], None] = {}
        for s in specs:
            if s.supports:
                seen.setdefault((s.supports[0], s.support_class_id), None)
        return [(n, c) for n, c in seen if not all(self.cache.has(k) for k in self.keys(n, c))]

    def generate(self, specs: Sequence[EpisodeSpec], on_progress: Callable[[int], None] | None = None) -> int:
        """Fill the cache for every episode of ``specs``; returns the number of images generated."""
        before = self.generated
        for support, cls in self.pending(specs):
            self.images(support, cls)
            if on_progress is not None:
                on_progress(1)
        return self.generated - before

    # --- consumption -----------------------------------------------------------------------------------
    def extend(self, raw: RawEpisode) -> RawEpisode:
        """``raw`` with its auxiliary shots appended (see the module doc)."""
        if not raw.shots:
            raise UserError("auxiliary supports need a support image; kind 'text' cannot take aux shots")
        first: RawShot = raw.shots[0]
        cls = raw.spec.support_class_id
        hw = first.image.shape[:2]
        extra, fallbacks = [], 0
        for k, im in enumerate(self.images(first.name, cls)):
            if im is None:
                fallbacks += 1
                extra.append(replace(first, name=f"{first.name}#aux{k}=fallback"))
            else:
                extra.append(RawShot(name=f"{first.name}#aux{k}", image=_resize(im, hw), annotation=first.annotation))
        self.fallbacks[raw.spec.episode_id] = fallbacks
        if len(self.controls) < self.keep_controls:
            mask, _ = self.dataset.load_label(first.name, cls)
            self.controls[raw.spec.episode_id] = self.control(first.image, mask, cls)
        return replace(raw, shots=list(raw.shots) + extra)

    def summary(self, episode_ids: Sequence[int]) -> dict[str, Any]:
        """What the result keeps: shots, condition, backend, edge detector, fallbacks."""
        fb = [self.fallbacks.get(int(e), 0) for e in episode_ids]
        return {
            "condition": self.condition,
            "backend": self.config["backend"],
            "aux_shots": self.n,
            "edges": self.edge_identity(),
            "fallbacks": int(sum(fb)),
            "episodes_with_fallback": int(sum(1 for x in fb if x)),
            "images": self.n * len(fb),
            "stand_in": self.config["backend"] == "offline",
        }
