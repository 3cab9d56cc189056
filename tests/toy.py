"""Tiny in-memory dataset and backbone for engine tests (no files, milliseconds per episode)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from fssbench.backbones.base import Backbone, LayerSpec
from fssbench.datasets.base import Entry, FSSDataset


class ToyDataset(FSSDataset):
    """8 classes in 2 folds; image ``i`` of class ``c`` holds one square of a class-specific colour."""

    name = "toy"
    n_folds = 2

    def __init__(self, root: str | Path = ".", n_per_class: int = 6, size: int = 32, **kw: object) -> None:
        super().__init__(root, **kw)
        self.n, self.size = n_per_class, size

    @property
    def class_names(self) -> dict[int, str]:
        return {c: f"thing{c}" for c in range(1, 9)}

    def fold_classes(self, fold: int) -> list[int]:
        return list(range(4 * fold + 1, 4 * fold + 5))

    def entries(self, fold: int, split: str) -> list[Entry]:
        classes = self.fold_classes(fold) if split == "val" else self.base_classes(fold)
        lo, hi = (0, self.n) if split != "baseval" else (self.n, self.n + 3)
        if split == "trn":
            hi = self.n
        return [Entry(f"c{c}_{i}", c) for c in classes for i in range(lo, hi)]

    def image_path(self, name: str) -> Path:
        return self.root / name

    def label_path(self, name: str, class_id: int) -> Path:
        return self.root / name

    def _geom(self, name: str) -> tuple[int, int, int, int]:
        c, i = (int(x) for x in name[1:].split("_"))
        rng = np.random.default_rng([c, i])
        s = int(rng.integers(self.size // 4, self.size // 2))
        y, x = (int(v) for v in rng.integers(0, self.size - s, size=2))
        return c, y, x, s

    def load_image(self, name: str) -> np.ndarray:
        c, y, x, s = self._geom(name)
        rng = np.random.default_rng([c, 99])
        img = np.full((self.size, self.size, 3), 40, np.uint8)
        img[y : y + s, x : x + s] = rng.integers(80, 255, size=3)
        return img

    def load_label(self, name: str, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        c, y, x, s = self._geom(name)
        mask = np.zeros((self.size, self.size), np.uint8)
        if c == class_id:
            mask[y : y + s, x : x + s] = 1
        ignore = np.zeros_like(mask, dtype=bool)
        ignore[max(y - 1, 0), x : x + s] = True
        return mask, ignore

    def check(self, shots: int = 1) -> list[str]:
        return []


class ToyBackbone(Backbone):
    """A 4-stage conv net with ResNet strides; random but fixed weights."""

    name = "toy"
    arch = "cnn"
    pretraining = "random"

    def __init__(self, width: int = 8, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        chans = [3, width, 2 * width, 4 * width, 8 * width]
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, stride=4 if i == 0 else 2, padding=1) for i in range(4))
        for conv in self.convs:
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.3)
                conv.bias.zero_()
        self._layers = [LayerSpec(f"layer{i + 1}.0", chans[i + 1], 4 * 2**i, i + 1) for i in range(4)]
        self.freeze()

    def _extract(self, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        out = {}
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if f"layer{i + 1}.0" in names:
                out[f"layer{i + 1}.0"] = x.clone()
            x = torch.relu(x)
        return out


# --- a tiny trainable, stitchable method for engine/runner tests ---------------------------------
from typing import Any, ClassVar  # noqa: E402

import torch.nn.functional as F  # noqa: E402

from fssbench.backbones import backbone_names, register_backbone  # noqa: E402
from fssbench.episode import EpisodeBatch  # noqa: E402
from fssbench.methods import Capabilities, Method, TrainConfig, register_method  # noqa: E402
from methods.prototype import Prototype  # noqa: E402


@register_method
class ToyDecoder(Method):
    """Prototype cosine maps refined by a learned 3x3 conv: trains in milliseconds, backbone-agnostic."""

    name: ClassVar[str] = "toy-decoder"
    capabilities: ClassVar[Capabilities] = Capabilities(
        kinds=frozenset({"mask", "bbox", "scribble"}), trains=True, stitchable=True
    )
    default_config: ClassVar[dict[str, Any]] = {"layers": "auto", "hybrid_masking": False}
    default_train: ClassVar[TrainConfig] = TrainConfig(epochs=2, episodes_per_epoch=16, batch_size=4, val_episodes=8)

    def __init__(self, backbone, **options: Any) -> None:
        super().__init__(backbone, **options)
        self.head = torch.nn.Conv2d(2, 2, 3, padding=1)

    def predict(self, batch: EpisodeBatch) -> torch.Tensor:
        proto = Prototype(self.backbone, **self.options)
        with torch.no_grad():
            sims = proto.predict(batch)
        return self.head(sims * 5)

    def loss(self, batch: EpisodeBatch):
        logits = self.predict(batch)
        target = batch.query_mask.clone()
        target[batch.query_ignore] = 255
        loss = F.cross_entropy(logits, target, ignore_index=255)
        return loss, {"ce": loss.item()}


def register_toy_backbones() -> None:
    for name, width in (("toy-s", 8), ("toy-m", 12)):
        if name not in backbone_names():
            register_backbone(name, lambda checkpoint, w=width: ToyBackbone(width=w), kind="test", arch="cnn", pretraining="random")


register_toy_backbones()
