"""One feature interface over every backbone (CLIP, ImageNet, the embedded zoo).

Methods never touch a backbone's internals: they ask for named layers and get feature maps,
each with declared channels and stride, so a decoder trained on one backbone can be evaluated on
another (the stitching matrix). Backbones are frozen and in eval mode.

Layer naming
------------
``blocks``: every residual block (ResNet bottleneck / basic block), VGG conv layer or transformer
block, in forward order, named ``"<stage>.<index>"`` (e.g. ``"layer3.5"``, ``"blocks.11"``).
For ResNets a block's feature is taken *before the block's final ReLU*, exactly as HSNet's
``extract_feat_res`` does, so HSNet-style hypercorrelation sees the same numbers as the authors'
code. ``stages``: the last block of each stage (the per-stage pyramid most decoders use).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class LayerSpec:
    """A feature layer: its name, channel count, stride w.r.t. the input, and stage index (1-based)."""

    name: str
    channels: int
    stride: int
    stage: int


class Backbone(nn.Module, ABC):
    """Frozen feature extractor. Subclasses fill the class attributes and implement ``_extract``."""

    name: str = ""
    arch: str = ""  # "cnn" or "vit"
    pretraining: str = ""  # "clip", "in1k", "zoo-sup", "zoo-clip", "random", ...
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __init__(self) -> None:
        super().__init__()
        self._layers: list[LayerSpec] = []

    # --- description -------------------------------------------------------
    @property
    def layers(self) -> list[LayerSpec]:
        """Every block-level layer, in forward order."""
        return list(self._layers)

    @property
    def stage_layers(self) -> list[LayerSpec]:
        """The last block of each stage (per-stage features)."""
        last: dict[int, LayerSpec] = {}
        for spec in self._layers:
            last[spec.stage] = spec
        return [last[s] for s in sorted(last)]

    def layer(self, name: str) -> LayerSpec:
        for spec in self._layers:
            if spec.name == name:
                return spec
        raise KeyError(f"{self.name} has no layer {name!r}; it has {[s.name for s in self._layers]}")

    @property
    def has_text(self) -> bool:
        return False

    # --- compute -----------------------------------------------------------
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Map RGB images in [0, 1] to this backbone's input normalisation."""
        mean = torch.tensor(self.mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        return (images - mean) / std

    @torch.no_grad()
    def forward(self, images: torch.Tensor, layers: Sequence[str] | str = "blocks") -> dict[str, torch.Tensor]:
        """Feature maps ``[B, C, H/stride, W/stride]`` keyed by layer name.

        ``images``: ``[B, 3, H, W]`` RGB in [0, 1] (normalisation is applied here).
        ``layers``: ``"blocks"``, ``"stages"`` or an explicit list of layer names.
        """
        if isinstance(layers, str):
            if layers == "blocks":
                names = [s.name for s in self._layers]
            elif layers == "stages":
                names = [s.name for s in self.stage_layers]
            else:
                names = [layers]
        else:
            names = list(layers)
        unknown = [n for n in names if n not in {s.name for s in self._layers}]
        if unknown:
            raise KeyError(f"{self.name} has no layer(s) {unknown}")
        from fssbench.backbones.cache import cached_extract

        return cached_extract(self, images, names, lambda: self._extract(self.normalize(images), names))

    @abstractmethod
    def _extract(self, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        """Run the network on normalised ``x`` and return the requested layers (stop early if possible)."""

    # --- text (CLIP-style backbones) ----------------------------------------
    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings ``[N, D]``."""
        raise NotImplementedError(f"{self.name} has no text tower")

    def dense_image_embedding(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised per-location image embeddings ``[B, D, h, w]`` in the text space."""
        raise NotImplementedError(f"{self.name} has no text tower")

    @torch.no_grad()
    def dense_text_similarity(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Cosine similarity ``[B, N, h, w]`` between each location and each prompt."""
        dense = self.dense_image_embedding(images)
        text = self.encode_text(prompts).to(dense.dtype)
        return torch.einsum("bdhw,nd->bnhw", dense, text)

    def freeze(self) -> "Backbone":
        """Frozen and in eval mode; ``train()`` keeps it in eval mode (BN statistics never move)."""
        for p in self.parameters():
            p.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> "Backbone":  # noqa: ARG002 - backbones stay frozen
        return super().train(False)
