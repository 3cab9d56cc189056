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
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar

import torch
from torch import nn

from fssbench.backbones.base import Backbone
from fssbench.episode import ANNOTATION_KINDS, EpisodeBatch
from fssbench.errors import UserError


@dataclass(frozen=True)
class Capabilities:
    """What a method can do; the suite runner rejects runs outside it before any work starts."""

    kinds: frozenset[str] = frozenset({"mask"})
    min_shot: int = 1
    max_shot: int | None = None
    trains: bool = True
    stitchable: bool = False
    batchable: bool = True

    def supports(self, kind: str, shot: int) -> str | None:
        """``None`` when (kind, shot) is supported, else the reason it is not."""
        if kind not in self.kinds:
            return f"annotation kind '{kind}' (supports {', '.join(sorted(self.kinds))})"
        if shot < self.min_shot or (self.max_shot is not None and shot > self.max_shot):
            hi = "any" if self.max_shot is None else str(self.max_shot)
            return f"{shot}-shot (supports {self.min_shot}..{hi})"
        return None


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

    Subclasses set ``name``, ``capabilities`` and ``default_config`` (method options with their
    defaults; unknown keys in a suite are rejected) and implement ``predict`` (and ``loss`` when
    ``capabilities.trains``). ``predict`` returns foreground/background logits ``[B, 2, H, W]`` at the
    batch's input resolution; the harness takes the argmax and scores it under the protocol.
    """

    name: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()
    default_config: ClassVar[dict[str, Any]] = {}
    default_train: ClassVar[TrainConfig] = TrainConfig()

    def __init__(self, backbone: Backbone, **options: Any) -> None:
        super().__init__()
        unknown = sorted(set(options) - set(self.default_config))
        if unknown:
            raise UserError(
                f"method '{self.name}' has no option(s) {', '.join(unknown)}; "
                f"valid options: {', '.join(sorted(self.default_config)) or 'none'}"
            )
        self.options: dict[str, Any] = {**self.default_config, **options}
        # The backbone is not a registered submodule: it is frozen, shared, swappable, and
        # never part of the method's saved state.
        object.__setattr__(self, "backbone", backbone)

    # --- backbone ------------------------------------------------------------
    def set_backbone(self, backbone: Backbone) -> None:
        """Pair the trained decoder with another backbone (stitching)."""
        if not self.capabilities.stitchable:
            raise UserError(f"method '{self.name}' is tied to its training backbone and cannot be stitched")
        object.__setattr__(self, "backbone", backbone)

    # --- learning ------------------------------------------------------------
    def loss(self, batch: EpisodeBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss on a batch of base-class episodes, plus scalars to log."""
        raise NotImplementedError(f"method '{self.name}' does not train")

    @abstractmethod
    def predict(self, batch: EpisodeBatch) -> torch.Tensor:
        """Background/foreground scores ``[B, 2, H, W]`` for the batch's queries (argmax = prediction)."""

    def predict_mask(self, batch: EpisodeBatch) -> torch.Tensor:
        """Binary prediction ``[B, H, W]``: the argmax of ``predict``."""
        return self.predict(batch).argmax(dim=1)


    # --- state -----------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The method's own learned state (never the backbone)."""
        return {k: v.detach().cpu() for k, v in self.state_dict().items()}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(state)


_REGISTRY: dict[str, type[Method]] = {}
_DISCOVERED = False


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} must set a non-empty `name`")
    bad = set(cls.capabilities.kinds) - set(ANNOTATION_KINDS)
    if bad:
        raise ValueError(f"{cls.name}: unknown annotation kinds {bad}")
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
