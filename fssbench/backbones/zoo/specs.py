"""What each zoo model is: architecture config, pretraining recipe and training budget.

The four models show DiffUp's three kinds of backbone upgrade on the synthetic world:

=============  =========  ===========================================  ===========================
name           arch       network                                      pretraining
=============  =========  ===========================================  ===========================
zoo-rn-s       cnn        ZooResNet width 16, blocks [1, 1, 1, 1]      supervised (48 classes)
zoo-rn-m       cnn        ZooResNet width 20, blocks [2, 2, 3, 2]      supervised   (scale-up)
zoo-vit        vit        ViT patch 8, dim 64, 8 blocks, 4 stages      supervised   (arch shift)
zoo-clip-rn    cnn        zoo-rn-s trunk + attnpool, text transformer  contrastive  (pre-training)
=============  =========  ===========================================  ===========================

Supervised models are trained with a 48-way classification loss (label smoothing 0.1, AdamW,
cosine schedule, flip + translation augmentation) on the synthetic world's pretraining classes,
image-level labels only, like ImageNet pretraining. An auxiliary per-pixel segmentation loss from
the render masks is available (``aux_seg`` > 0: background vs. 48 classes on stage-3 + stage-4
features) but is off: on zoo-rn-s it moved the fold-class probe from 0.193 to 0.201 mIoU and
held-out accuracy from 0.940 to 0.944 (one seed each), too little to be worth making supervised
and contrastive pretraining differ in supervision. ``zoo-clip-rn`` sees only (image,
``"a photo of a {name}"``) pairs, with open_clip's ``ClipLoss``; its batches hold each class at
most once, so no in-batch negative is a positive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Word-level vocabulary of the CLIP text tower (frozen here so checkpoints never depend on later
# edits of the synthetic world): the prompt template, the colours, the texture adjectives, the shapes.
TEXT_VOCAB: tuple[str, ...] = (
    "a", "an", "photo", "of", "the",
    "red", "green", "blue", "yellow", "orange", "purple", "cyan", "pink", "white", "brown",
    "solid", "striped", "dotted", "checkered", "gradient", "gridded", "wavy",
    "circle", "square", "triangle", "star", "cross", "ring", "crescent", "heart", "arrow", "hexagon",
    "diamond", "semicircle", "trapezoid", "bowtie", "tee", "flower",
)

IMAGE_SIZE = 64
"""Training resolution of every zoo model (features work at any size; see models.py)."""


@dataclass(frozen=True)
class ZooSpec:
    name: str
    arch: str  # "cnn" | "vit"
    family: str  # "resnet" | "vit" | "clip"
    model: str  # words, for listings
    pretraining: str  # "zoo-sup" | "zoo-clip"
    upgrade: str  # which DiffUp upgrade it stands for
    config: dict[str, Any]
    steps: int
    batch: int
    lr: float
    weight_decay: float = 0.05
    warmup: int = 100
    seed: int = 0
    aux_seg: float = 0.0  # weight of the auxiliary segmentation loss (supervised CNNs)
    extra: dict[str, Any] = field(default_factory=dict)


ZOO: dict[str, ZooSpec] = {
    s.name: s
    for s in (
        ZooSpec(
            name="zoo-rn-s",
            arch="cnn",
            family="resnet",
            model="ZooResNet-S (bottleneck, width 16, blocks 1-1-1-1)",
            pretraining="zoo-sup",
            upgrade="base",
            config={"width": 16, "layers": [1, 1, 1, 1]},
            steps=1200,
            batch=64,
            lr=2e-3,
            seed=101,
        ),
        ZooSpec(
            name="zoo-rn-m",
            arch="cnn",
            family="resnet",
            model="ZooResNet-M (bottleneck, width 20, blocks 2-2-3-2)",
            pretraining="zoo-sup",
            upgrade="scale-up of zoo-rn-s",
            config={"width": 20, "layers": [2, 2, 3, 2]},
            steps=1000,
            batch=64,
            lr=2e-3,
            seed=102,
        ),
        ZooSpec(
            name="zoo-vit",
            arch="vit",
            family="vit",
            model="ZooViT (patch 8, dim 64, 8 blocks, 2 heads; stages = pairs of blocks)",
            pretraining="zoo-sup",
            upgrade="architecture shift (CNN -> ViT)",
            config={"patch": 8, "dim": 64, "depth": 8, "heads": 2, "blocks_per_stage": 2},
            steps=1000,
            batch=64,
            lr=1e-3,
            seed=103,
        ),
        ZooSpec(
            name="zoo-clip-rn",
            arch="cnn",
            family="clip",
            model="ZooCLIP-RN (zoo-rn-s trunk + attnpool; 3-layer text transformer)",
            pretraining="zoo-clip",
            upgrade="pre-training change (supervised -> contrastive image-text)",
            config={
                "width": 16,
                "layers": [1, 1, 1, 1],
                "embed_dim": 128,
                "context_length": 12,
                "text_width": 96,
                "text_heads": 4,
                "text_layers": 3,
            },
            steps=1400,
            batch=48,
            lr=2e-3,
            weight_decay=0.1,
            seed=104,
        ),
    )
}


def get_spec(name: str) -> ZooSpec:
    from fssbench.errors import UserError

    try:
        return ZOO[name]
    except KeyError:
        raise UserError(f"unknown zoo model {name!r}; zoo models: {', '.join(ZOO)}") from None
