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


@register_method
class ToyStochastic(ToyDecoder):
    """ToyDecoder plus what stochastic, multi-output methods do: evaluation-time noise from the
    batch's per-episode generators, evaluation options, a scored mask output (``prior``), a
    scalar output and an artefact; text supports at k = 0 on text backbones."""

    name: ClassVar[str] = "toy-stochastic"
    capabilities: ClassVar[Capabilities] = Capabilities(
        kinds=frozenset({"mask", "bbox", "text"}), trains=True, stitchable=True,
        shot_ranges={"text": (0, 0)},
    )
    default_config: ClassVar[dict[str, Any]] = {**ToyDecoder.default_config, "noise": 0.5, "samples": 2}
    eval_options: ClassVar[frozenset[str]] = frozenset({"noise", "samples"})
    mask_outputs: ClassVar[frozenset[str]] = frozenset({"prior"})

    def predict(self, batch: EpisodeBatch):
        from fssbench.methods import Prediction

        if batch.kind == "text":
            b, (h, w) = len(batch), batch.query_image.shape[-2:]
            sims = torch.zeros(b, 2, h, w, device=batch.query_image.device)
        else:
            proto = Prototype(self.backbone, **{k: v for k, v in self.options.items() if k in Prototype.default_config})
            with torch.no_grad():
                sims = proto.predict(batch)
        logits = self.head(sims * 5)
        if self.training:
            return logits
        noise = batch.randn(int(self.options["samples"]), *logits.shape[1:]).mean(1)
        scores = logits + float(self.options["noise"]) * noise
        prior = torch.sigmoid(5 * (sims[:, 1] - sims[:, 0]))
        return Prediction(
            scores=scores,
            masks={"prior": prior},
            scalars={"pred_iou": prior.mean(dim=(1, 2))},
            artefacts={"noise": noise[:, 1]},
        )

    def loss(self, batch: EpisodeBatch):
        return ToyDecoder.loss(self, batch)


@register_method
class ToyColour(Method):
    """Zero-training: foreground = pixels of the support object's mean colour. Perfect on the toy
    dataset (one colour per class) with its own supports, blind with another class's."""

    name: ClassVar[str] = "toy-colour"
    capabilities: ClassVar[Capabilities] = Capabilities(kinds=frozenset({"mask"}), trains=False, stitchable=True)
    default_train: ClassVar[TrainConfig] = TrainConfig(epochs=0)

    def predict(self, batch: EpisodeBatch) -> torch.Tensor:
        fg = batch.support_fg[:, 0, None]  # [B, 1, H, W]
        colour = (batch.support_images[:, 0] * fg).sum((2, 3)) / fg.sum((2, 3)).clamp_min(1)  # [B, 3]
        dist = (batch.query_image - colour[:, :, None, None]).abs().amax(1)  # [B, H, W]
        fg_score = 0.05 - dist
        return torch.stack([torch.zeros_like(fg_score), fg_score], dim=1)


class ToyTextBackbone(ToyBackbone):
    """A toy backbone that claims a text tower (for capability checks of text supports)."""

    @property
    def has_text(self) -> bool:
        return True


def register_toy_backbones() -> None:
    for name, width in (("toy-s", 8), ("toy-m", 12)):
        if name not in backbone_names():
            register_backbone(name, lambda checkpoint, w=width: ToyBackbone(width=w), kind="test", arch="cnn", pretraining="random")
    if "toy-text" not in backbone_names():
        register_backbone(
            "toy-text", lambda checkpoint: ToyTextBackbone(width=8), kind="test", arch="cnn", pretraining="random", has_text=True
        )


register_toy_backbones()


# --- the toy dataset under a registered name, so suites can name it ------------------------------
from fssbench.datasets.base import _REGISTRY as _DATASETS, register_dataset  # noqa: E402

if "toy" not in _DATASETS:
    register_dataset("toy")(ToyDataset)
