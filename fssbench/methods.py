"""The method interface and registry.

A method is a subpackage of the top-level ``methods`` package (or any module exposed through the
``fssbench.methods`` entry-point group) that subclasses ``Method`` and decorates it with
``@register_method``. The harness discovers methods by walking that package; it never imports a
particular method by name.

A method owns only its *trainable* part (the decoder). The frozen backbone is handed in and can
be swapped after training (``set_backbone``) when the method declares itself ``stitchable``: that
is how a decoder trained on one backbone is evaluated on another without re-training.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar, Mapping

import torch
from torch import nn

from fssbench.backbones.base import Backbone
from fssbench.episode import ANNOTATION_KINDS, EpisodeBatch
from fssbench.errors import UserError
from fssbench.options import Option, defaults, unknown_problem, value_problems


@dataclass(frozen=True)
class Capabilities:
    """What a method can do; the suite runner rejects runs outside it before any work starts.

    ``min_shot`` / ``max_shot`` hold for every kind unless ``shot_ranges`` gives a kind its own
    ``(min, max)`` (``max`` ``None`` = any): e.g. text at k = 0 and masks at k >= 1 in one method.
    ``text_kinds``: kinds that need a backbone with a text tower (``Backbone.has_text``).
    """

    kinds: frozenset[str] = frozenset({"mask"})
    min_shot: int = 1
    max_shot: int | None = None
    trains: bool = True
    stitchable: bool = False
    batchable: bool = True
    shot_ranges: Mapping[str, tuple[int, int | None]] = field(default_factory=dict)
    text_kinds: frozenset[str] = frozenset({"text"})

    def shot_range(self, kind: str) -> tuple[int, int | None]:
        return tuple(self.shot_ranges.get(kind, (self.min_shot, self.max_shot)))  # type: ignore[return-value]

    def supports(self, kind: str, shot: int) -> str | None:
        """``None`` when (kind, shot) is supported, else the reason it is not."""
        if kind not in self.kinds:
            return f"annotation kind '{kind}' (supports {', '.join(sorted(self.kinds))})"
        lo, hi = self.shot_range(kind)
        if shot < lo or (hi is not None and shot > hi):
            return f"{shot}-shot {kind} supports (supports {lo}..{'any' if hi is None else hi} for {kind})"
        return None

    def backbone_problem(self, kind: str, backbone: Any) -> str | None:
        """``None`` when ``backbone`` can serve ``kind``, else why not."""
        if kind in self.text_kinds and not getattr(backbone, "has_text", False):
            return f"'{kind}' supports need a backbone with a text tower and {getattr(backbone, 'name', backbone)} has none"
        return None


@dataclass
class Prediction:
    """What ``Method.predict`` may return instead of bare scores.

    ``scores``: ``[B, 2, H, W]`` background/foreground scores (argmax = the prediction).
    ``masks``: further mask-like outputs, each ``[B, 2, H, W]`` scores or ``[B, H, W]`` foreground
    probabilities (binarised at 0.5), scored under the protocol like the prediction (e.g. a prior);
    their names must be declared in ``Method.mask_outputs``.
    ``scalars``: per-episode numbers ``[B]`` (e.g. a predicted IoU), stored in the records.
    ``artefacts``: per-episode arrays for figures (``name -> [B, ...]``), kept only for the
    bounded number of episodes the suite asks for.
    """

    scores: torch.Tensor
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    scalars: dict[str, torch.Tensor] = field(default_factory=dict)
    artefacts: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Optimisation settings a method declares (and a suite may override)."""

    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    epochs: int = 10
    episodes_per_epoch: int = 200
    batch_size: int = 8
    schedule: str = "constant"  # "constant" | "cosine" | "poly"
    shot: int = 1  # supports per training episode (k-shot evaluation reuses the 1-shot decoder, as usual)
    kind: str = "mask"  # support annotation kind during training
    val_episodes: int = 200  # frozen base-class validation episodes for model selection


class Method(nn.Module, ABC):
    """Base class of every FSS method.

    Subclasses set ``name``, ``capabilities`` and ``option_specs`` (each option's default, type and
    allowed values, :class:`fssbench.options.Option`; ``default_config`` is derived from it, and a
    suite's options are checked against it when the suite loads) and implement ``predict`` (and
    ``loss`` when ``capabilities.trains``). A method may set ``default_config`` alone instead: then
    only unknown option names are rejected. ``predict`` returns foreground/background logits ``[B, 2, H, W]`` at the
    batch's input resolution; the harness takes the argmax and scores it under the protocol.
    """

    name: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()
    option_specs: ClassVar[Mapping[str, Option]] = {}
    default_config: ClassVar[dict[str, Any]] = {}
    """Every option's default: derived from ``option_specs`` when a class declares them (one source)."""
    eval_options: ClassVar[frozenset[str]] = frozenset()
    """Options of ``default_config`` that act only at evaluation (sampling steps, ensemble size, a
    threshold): they change the run id but never the decoder id, so changing them never re-trains."""
    mask_outputs: ClassVar[frozenset[str]] = frozenset()
    """Names of ``Prediction.masks`` this method returns; each is scored under the protocol."""
    artefact_options: ClassVar[frozenset[str]] = frozenset()
    """Evaluation options that only add artefacts (e.g. recording a trajectory) and never change a
    prediction: reports compare runs across them (sensitivity plots)."""
    quiet_defaults: ClassVar[frozenset[str]] = frozenset()
    """Options added after results existed: at their default value (which reproduces the earlier
    behaviour exactly) they stay out of the resolved run config, so the run and decoder ids and the
    report's cells of earlier results stay valid; any other value is recorded like every option."""

    @classmethod
    def _quiet(cls, key: str, value: Any) -> bool:
        """A :attr:`quiet_defaults` option at its default (left out of run configs and decoder ids)."""
        return key in cls.quiet_defaults and value == cls.default_config.get(key)

    @classmethod
    def resolved_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """``default_config`` updated with ``options``, minus :attr:`quiet_defaults` at their default."""
        return {k: v for k, v in {**cls.default_config, **options}.items() if not cls._quiet(k, v)}
    default_train: ClassVar[TrainConfig] = TrainConfig()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "option_specs" in cls.__dict__:
            if "default_config" in cls.__dict__:
                raise TypeError(f"{cls.__qualname__}: declare option defaults in option_specs only, not also in default_config")
            cls.default_config = defaults(cls.option_specs)
        elif "default_config" in cls.__dict__ and cls.option_specs:
            raise TypeError(f"{cls.__qualname__}: its base declares option_specs; override those (with their defaults), not default_config")

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> str | None:
        """Why these resolved options (every option present, each one allowed on its own) do not go
        together, or ``None``: the hook for rules across options (``sampling_steps <= timesteps``)."""
        return None

    @classmethod
    def option_problems(cls, options: Mapping[str, Any], label: str | None = None) -> list[str]:
        """One line per problem with a suite's ``options`` for this method (unknown name, wrong type,
        out of range, not a choice, options that do not go together), checked before any work;
        ``label`` names the suite entry when it differs from the method's name."""
        who = f"method '{cls.name}'" if label in (None, cls.name) else f"method '{label}' ({cls.name})"
        unknown = unknown_problem(who, options, cls.default_config)
        problems = ([unknown] if unknown else []) + value_problems(who, options, cls.option_specs)
        if not problems:
            why = cls.check_options({**cls.default_config, **options})
            if why:
                problems.append(f"{who} options: {why}")
        return problems

    def __init__(self, backbone: Backbone, **options: Any) -> None:
        super().__init__()
        problems = self.option_problems(options)
        if problems:
            raise UserError(problems[0])
        self.options: dict[str, Any] = {**self.default_config, **options}
        # The backbone is not a registered submodule: it is frozen, shared, swappable, and
        # never part of the method's saved state.
        object.__setattr__(self, "backbone", backbone)

    # --- backbone ------------------------------------------------------------
    @classmethod
    def stitch_refused(cls, options: Mapping[str, Any]) -> str | None:
        """Why a decoder with these options may never be paired with another backbone (a suite that
        asks for it is rejected), or ``None``. Default: ``capabilities.stitchable``."""
        if not cls.capabilities.stitchable:
            return f"method '{cls.name}' is tied to its training backbone and cannot be stitched"
        return None

    @classmethod
    def stitch_incompatible(cls, options: Mapping[str, Any], train: Any, eval_: Any) -> str | None:
        """Why *this* pair of backbones cannot be stitched although the method can be in general (the
        run becomes an explicit "incompatible" cell), or ``None``. ``train`` / ``eval_`` describe the
        backbones (``BackboneInfo`` or ``Backbone``: ``name``, ``arch``, ``layer_specs()`` or ``layers``)."""
        return None

    def set_backbone(self, backbone: Backbone) -> None:
        """Pair the trained decoder with another backbone (stitching)."""
        why = self.stitch_refused(self.options) or self.stitch_incompatible(self.options, self.backbone, backbone)
        if why:
            raise UserError(why)
        object.__setattr__(self, "backbone", backbone)

    # --- learning ------------------------------------------------------------
    def loss(self, batch: EpisodeBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss on a batch of base-class episodes, plus scalars to log."""
        raise NotImplementedError(f"method '{self.name}' does not train")

    @abstractmethod
    def predict(self, batch: EpisodeBatch) -> "torch.Tensor | Prediction":
        """Background/foreground scores ``[B, 2, H, W]`` for the batch's queries (argmax = prediction),
        or a :class:`Prediction` carrying further outputs. Evaluation-time noise must come from
        ``batch.randn`` / ``batch.rand`` (per-episode generators), never the global RNG."""

    def predict_mask(self, batch: EpisodeBatch) -> torch.Tensor:
        """Binary prediction ``[B, H, W]``: the argmax of ``predict``."""
        return as_prediction(self.predict(batch)).scores.argmax(dim=1)

    @classmethod
    def training_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options a trained decoder depends on (every option that is not an evaluation option;
        :attr:`quiet_defaults` at their default left out, as in the run config)."""
        return {k: v for k, v in options.items() if k not in cls.eval_options and not cls._quiet(k, v)}

    def load_released(self, path: str) -> None:
        """Load a released checkpoint file (e.g. the authors'); methods with their own format override."""
        raise UserError(f"method '{self.name}' reads no released checkpoints; evaluate a decoder trained by fssbench")


    # --- state -----------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The method's own learned state (never the backbone)."""
        return {k: v.detach().cpu() for k, v in self.state_dict().items()}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(state)


def as_prediction(out: "torch.Tensor | Prediction") -> Prediction:
    return out if isinstance(out, Prediction) else Prediction(scores=out)


_REGISTRY: dict[str, type[Method]] = {}
_DISCOVERED = False


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} must set a non-empty `name`")
    bad = set(cls.capabilities.kinds) - set(ANNOTATION_KINDS)
    if bad:
        raise ValueError(f"{cls.name}: unknown annotation kinds {bad}")
    stray = set(cls.eval_options) - set(cls.default_config)
    if stray:
        raise ValueError(f"{cls.name}: eval_options {sorted(stray)} are not in default_config")
    bad_defaults = cls.option_problems(cls.default_config)
    if bad_defaults:
        raise ValueError(f"{cls.name}: a declared default is not allowed by its own spec: {bad_defaults[0]}")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    try:
        import methods as pkg
    except ImportError:  # pragma: no cover - the methods package ships with fssbench
        pkg = None
    if pkg is not None:
        for info in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"methods.{info.name}")
    for ep in entry_points(group="fssbench.methods"):
        ep.load()


def method_names() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get_method_class(name: str) -> type[Method]:
    _discover()
    if name not in _REGISTRY:
        raise UserError(f"unknown method '{name}'; choose one of: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create_method(name: str, backbone: Backbone, **options: Any) -> Method:
    return get_method_class(name)(backbone, **options)
