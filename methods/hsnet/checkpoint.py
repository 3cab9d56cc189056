"""Loading the HSNet authors' released checkpoints (and HSNet-HM's, which share the format).

The authors save ``model.state_dict()`` of their whole network wrapped in ``nn.DataParallel``, so a
file holds ``module.hpn_learner.<...>`` (the learner) and ``module.backbone.<...>`` (the torchvision
backbone, ImageNet weights they never fine-tune) keys; files saved without the wrapper lack the
``module.`` prefix. Our learner's submodules carry the authors' names, so the learner maps one to
one. The backbone tensors are returned (torchvision names) for the caller to load or ignore.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

from fssbench.errors import MissingFileError, UserError

PARALLEL_PREFIX = "module."
LEARNER_PREFIX = "hpn_learner."
BACKBONE_PREFIX = "backbone."

KNOWN_LEARNERS: dict[tuple[int, int, int], str] = {
    (3, 6, 4): "resnet50",
    (3, 23, 4): "resnet101",
    (1, 3, 3): "vgg16",
}
"""Correlation layers per pyramid level (deepest first) -> the authors' backbone that gives them."""


@dataclass
class AuthorsCheckpoint:
    """An authors' state dict split into learner and backbone parts (prefixes removed)."""

    learner: dict[str, torch.Tensor]
    backbone: dict[str, torch.Tensor] = field(default_factory=dict)
    source: str = "checkpoint"

    @property
    def learner_inch(self) -> tuple[int, int, int] | None:
        """Correlation layers per level (deepest first) the learner was trained for, if readable."""
        try:
            return tuple(  # type: ignore[return-value]
                int(self.learner[f"encoder_layer{lv}.0.conv1.weight"].shape[1]) for lv in (4, 3, 2)
            )
        except (KeyError, IndexError):
            return None

    @property
    def trained_backbone(self) -> str | None:
        """``resnet50`` / ``resnet101`` / ``vgg16`` when the learner's shape identifies it."""
        inch = self.learner_inch
        return None if inch is None else KNOWN_LEARNERS.get(inch)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """``torch.load`` a checkpoint on the CPU with ``weights_only=True``; a ``{"state_dict": ...}``
    wrapper is unwrapped."""
    from fssbench.backbones.weights import read_torch_file

    path = os.fspath(path)
    obj: Any = read_torch_file(path, what="HSNet checkpoint", fix="pass the authors' released .pt file")
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"HSNet checkpoint {path} is not a state dict of tensors")
    return dict(obj)


def split_state_dict(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> AuthorsCheckpoint:
    """Strip ``module.``, route ``hpn_learner.*`` and ``backbone.*``; any other key is an error."""
    learner: dict[str, torch.Tensor] = {}
    backbone: dict[str, torch.Tensor] = {}
    other: list[str] = []
    for key, value in state.items():
        k = key[len(PARALLEL_PREFIX) :] if key.startswith(PARALLEL_PREFIX) else key
        if k.startswith(LEARNER_PREFIX):
            learner[k[len(LEARNER_PREFIX) :]] = value
        elif k.startswith(BACKBONE_PREFIX):
            backbone[k[len(BACKBONE_PREFIX) :]] = value
        else:
            other.append(key)
    if other:
        raise UserError(
            f"{source}: {len(other)} unexpected key(s) outside hpn_learner/backbone ({_few(other)}); "
            "is this an HSNet checkpoint?"
        )
    if not learner:
        raise UserError(f"{source}: no hpn_learner.* weights; is this an HSNet checkpoint?")
    return AuthorsCheckpoint(learner=learner, backbone=backbone, source=source)


def _few(keys: list[str], n: int = 3) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... {len(keys) - n} more" if len(keys) > n else "")


def _learner_of(method: nn.Module) -> nn.Module:
    learner = getattr(method, "hpn_learner", None)
    if not isinstance(learner, nn.Module):
        raise TypeError(f"{type(method).__name__} has no hpn_learner")
    return learner


def load_learner_state(method: nn.Module, ckpt: AuthorsCheckpoint) -> None:
    """Copy the checkpoint's learner into ``method.hpn_learner``; every tensor must match by name and
    shape, otherwise a one-line ``UserError`` names what differs."""
    learner = _learner_of(method)
    ours = learner.state_dict()
    missing = [k for k in ours if k not in ckpt.learner]
    unexpected = [k for k in ckpt.learner if k not in ours]
    mismatched = [k for k in ours if k in ckpt.learner and tuple(ckpt.learner[k].shape) != tuple(ours[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_few(unexpected)})")
        if mismatched:
            k = mismatched[0]
            parts.append(
                f"{len(mismatched)} of another shape (e.g. {k}: {tuple(ckpt.learner[k].shape)} vs {tuple(ours[k].shape)})"
            )
        hint = ""
        theirs, mine = ckpt.learner_inch, getattr(learner, "inch", None)
        if theirs is not None and mine is not None and tuple(theirs) != tuple(mine):
            tb = ckpt.trained_backbone
            hint = (
                f"; the checkpoint's learner takes {theirs} correlation layers per level"
                + (f" ({tb})" if tb else "")
                + f", this model {tuple(mine)}: pick the matching backbone/layers"
            )
        raise UserError(f"{ckpt.source}: learner keys do not match: " + "; ".join(parts) + hint)
    learner.load_state_dict({k: ckpt.learner[k].to(dtype=ours[k].dtype) for k in ours}, strict=True)


def load_checkpoint(method: nn.Module, path: str | os.PathLike[str]) -> AuthorsCheckpoint:
    """Read an authors' checkpoint file and load its learner into ``method``; returns the split
    checkpoint (``.backbone`` holds the torchvision backbone tensors, not loaded)."""
    ckpt = split_state_dict(read_state_dict(path), source=f"HSNet checkpoint {os.fspath(path)}")
    load_learner_state(method, ckpt)
    return ckpt
