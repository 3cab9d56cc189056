"""The backbone registry: names -> factories + metadata (timm / open_clip style).

Registering (built-ins in ``resnet.py`` / ``clip.py``; the embedded zoo in ``fssbench/backbones/zoo``)::

    register_backbone(
        "zoo-rn18", factory,                 # factory(checkpoint: Path | None) -> Backbone
        kind="zoo", arch="cnn", model="ResNet-18", pretraining="zoo-sup",
        layers=[LayerSpec(...), ...],        # optional: static description for listings
        has_text=False,
        weights=WeightsSpec(filenames=("zoo-rn18.safetensors",), cache_paths=(str(pkg_file),)),
    )

The factory receives the resolved weights file (``None`` means random initialisation) and builds
the network on the CPU; it loads the file itself (``weights.load_state_dict_file`` +
``weights.load_weights_into`` do the reading and strict checking). ``create_backbone`` resolves
weights, freezes, and moves the backbone to the device. A backbone registered with
``weights=None`` needs no file: ``"auto"`` then builds it with ``checkpoint=None``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from fssbench.backbones.base import Backbone, LayerSpec
from fssbench.backbones.weights import WeightsSpec, WeightsStatus, find_weights
from fssbench.errors import MissingFileError, UserError

BackboneFactory = Callable[..., Backbone]

__all__ = [
    "BackboneFactory",
    "BackboneInfo",
    "backbone_names",
    "create_backbone",
    "get_backbone_info",
    "list_backbones",
    "register_backbone",
    "unregister_backbone",
    "weights_status",
]


@dataclass(frozen=True)
class BackboneInfo:
    """Registry entry: metadata of one backbone (no network is built to describe it)."""

    name: str
    factory: BackboneFactory = field(repr=False, compare=False)
    kind: str  # family: "clip", "imagenet", "zoo", ...
    arch: str  # "cnn" or "vit" (as Backbone.arch)
    model: str = ""  # architecture in words, e.g. "ModifiedResNet-50", "ViT-B/16", "VGG-16"
    pretraining: str = ""  # "clip", "in1k", "zoo-sup", "zoo-clip", ...
    description: str = ""
    has_text: bool = False
    text_dim: int | None = None
    layers: tuple[LayerSpec, ...] | None = None
    weights: WeightsSpec | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    # --- derived -----------------------------------------------------------
    def layer_specs(self) -> tuple[LayerSpec, ...]:
        """Declared layers; when none were registered, built once with random weights on the meta device."""
        if self.layers is not None:
            return self.layers
        cached = _LAYER_CACHE.get(self.name)
        if cached is None:
            with torch.device("meta"):
                bb = self.factory(checkpoint=None)
            cached = tuple(bb.layers)
            _LAYER_CACHE[self.name] = cached
        return cached

    @property
    def stage_layers(self) -> tuple[LayerSpec, ...]:
        last: dict[int, LayerSpec] = {}
        for spec in self.layer_specs():
            last[spec.stage] = spec
        return tuple(last[s] for s in sorted(last))

    @property
    def needs_weights(self) -> bool:
        return self.weights is not None

    def weights_status(self, weights_dir: str | os.PathLike[str] | None = None) -> WeightsStatus | None:
        """Where the weights were found, or where they are expected; ``None`` if no file is needed."""
        if self.weights is None:
            return None
        return find_weights(self.name, self.weights, weights_dir)


_REGISTRY: dict[str, BackboneInfo] = {}
_LAYER_CACHE: dict[str, tuple[LayerSpec, ...]] = {}


def register_backbone(
    name: str,
    factory: BackboneFactory,
    *,
    kind: str,
    arch: str,
    model: str = "",
    pretraining: str = "",
    description: str = "",
    has_text: bool = False,
    text_dim: int | None = None,
    layers: Iterable[LayerSpec] | None = None,
    weights: WeightsSpec | None = None,
    overwrite: bool = False,
    **extra: Any,
) -> BackboneInfo:
    """Register ``factory(checkpoint: Path | None) -> Backbone`` under ``name``; returns the entry."""
    if not name or name != name.strip() or " " in name:
        raise ValueError(f"invalid backbone name {name!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"backbone {name!r} is already registered")
    if arch not in ("cnn", "vit"):
        raise ValueError(f"arch must be 'cnn' or 'vit', got {arch!r}")
    info = BackboneInfo(
        name=name,
        factory=factory,
        kind=kind,
        arch=arch,
        model=model,
        pretraining=pretraining,
        description=description,
        has_text=has_text,
        text_dim=text_dim,
        layers=tuple(layers) if layers is not None else None,
        weights=weights,
        extra=dict(extra),
    )
    _REGISTRY[name] = info
    _LAYER_CACHE.pop(name, None)
    return info


def unregister_backbone(name: str) -> None:
    """Remove an entry (tests, plugins replacing a built-in)."""
    _REGISTRY.pop(name, None)
    _LAYER_CACHE.pop(name, None)


def backbone_names(kind: str | None = None) -> list[str]:
    return [i.name for i in list_backbones(kind)]


def list_backbones(kind: str | None = None) -> list[BackboneInfo]:
    """Every registered backbone (registration order), optionally of one ``kind``."""
    return [i for i in _REGISTRY.values() if kind is None or i.kind == kind]


def get_backbone_info(name: str) -> BackboneInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(_REGISTRY) or "none"
        raise UserError(f"unknown backbone {name!r}; available: {known}") from None


def weights_status(name: str, weights_dir: str | os.PathLike[str] | None = None) -> WeightsStatus | None:
    return get_backbone_info(name).weights_status(weights_dir)


def create_backbone(
    name: str,
    weights: str | os.PathLike[str] = "auto",
    weights_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
) -> Backbone:
    """Build a frozen, eval-mode backbone.

    ``weights``: ``"auto"`` (find the registered file locally, see ``weights.py``; a missing file is a
    ``MissingFileError``), ``"random"`` (random initialisation, ``pretraining`` becomes ``"random"``),
    or a path to a weights file (a directory is used as ``weights_dir``).
    """
    info = get_backbone_info(name)
    checkpoint: Path | None
    if isinstance(weights, str) and weights == "random":
        checkpoint = None
    elif isinstance(weights, str) and weights == "auto":
        status = info.weights_status(weights_dir)
        if status is None:
            checkpoint = None
        elif status.found is None:
            raise status.error()
        else:
            checkpoint = status.found
    else:
        path = Path(weights).expanduser()
        if path.is_dir():
            return create_backbone(name, "auto", weights_dir=path, device=device)
        if not path.is_file():
            if path.exists():
                raise UserError(f"weights file {path} for {name} is not a regular file; pass the weights file itself")
            raise MissingFileError(f"weights file {path} for {name} not found; check the path")
        checkpoint = path

    backbone = info.factory(checkpoint=checkpoint)
    backbone.name = name
    if checkpoint is None and info.needs_weights:
        backbone.pretraining = "random"
    elif not backbone.pretraining:
        backbone.pretraining = info.pretraining
    backbone.weights_path = checkpoint  # type: ignore[attr-defined]
    backbone.freeze()
    return backbone.to(device)
