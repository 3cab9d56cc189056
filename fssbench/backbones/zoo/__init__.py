"""The embedded zoo: small backbones pretrained *here*, on the synthetic world's pretraining classes.

No weights can be downloaded in this project, so DiffUp's three backbone upgrades are reproduced
with four tiny networks trained deterministically on the 48 pretraining classes of
``fssbench.synth`` (disjoint from the 20 fold classes, so no novel class leaks into pretraining):

* ``zoo-rn-s`` -> ``zoo-rn-m``: scale-up (more blocks and width, same family; like RN50 -> RN101);
* ``zoo-rn-s`` -> ``zoo-vit``: architecture shift (CNN -> ViT);
* ``zoo-rn-s`` -> ``zoo-clip-rn``: pre-training change (supervised -> CLIP-style image-text
  contrastive), with the *same* CNN trunk, and a text tower (``encode_text``,
  ``dense_image_embedding``).

Specs in ``specs.py``, networks in ``models.py``, training in ``train.py``, files in ``store.py``.
``fssbench zoo build`` (re)trains them into the cache; trained checkpoints also ship in
``checkpoints/`` (fp16, SHA-256 in ``zoo.json`` / ``SHA256SUMS``).

Importing this package registers the four names in ``fssbench.backbones.registry`` (kind
``"zoo"``), so ``create_backbone("zoo-rn-s")`` works; ``load_zoo_backbone`` is the direct route
(cache, then shipped, checked against the checksum; a missing file is a one-line
``MissingFileError`` telling to run ``fssbench zoo build``).
"""

from __future__ import annotations

from pathlib import Path

from fssbench.backbones.base import Backbone, LayerSpec
from fssbench.backbones.zoo.specs import IMAGE_SIZE, TEXT_VOCAB, ZOO, ZooSpec, get_spec
from fssbench.backbones.zoo.store import (
    SHIPPED_DIR,
    cache_dir,
    checkpoint_file,
    load_network,
    load_zoo_backbone,
    locate,
    missing_error,
    read_manifest,
    wrap_backbone,
)

__all__ = [
    "IMAGE_SIZE",
    "SHIPPED_DIR",
    "TEXT_VOCAB",
    "ZOO",
    "ZooSpec",
    "cache_dir",
    "get_spec",
    "layer_specs",
    "load_zoo_backbone",
    "locate",
    "read_manifest",
    "register_zoo",
]


def layer_specs(spec: ZooSpec) -> list[LayerSpec]:
    """The block layers of ``spec`` (computed from its config, no network built)."""
    c = spec.config
    if spec.family == "vit":
        return [LayerSpec(f"blocks.{i}", c["dim"], c["patch"], i // c["blocks_per_stage"] + 1) for i in range(c["depth"])]
    out = []
    for i, n in enumerate(c["layers"]):
        for j in range(n):
            out.append(LayerSpec(f"layer{i + 1}.{j}", c["width"] * 4 * 2**i, 4 * 2**i, i + 1))
    return out


def _factory(name: str):
    def factory(checkpoint: Path | None = None) -> Backbone:
        """Registry factory: ``checkpoint=None`` -> random init; a path -> loaded and, when a
        ``zoo.json`` lies next to it, checked against its SHA-256."""
        spec = get_spec(name)
        if checkpoint is None:
            from fssbench.backbones.zoo.store import build_network

            bb = wrap_backbone(spec, build_network(spec))
            bb.pretraining = "random"
            return bb
        bb = wrap_backbone(spec, load_network(name, Path(checkpoint)))
        bb.weights_path = Path(checkpoint)  # type: ignore[attr-defined]
        return bb

    return factory


def register_zoo() -> None:
    """Register the zoo in ``fssbench.backbones.registry`` (idempotent).

    Weights are looked up by the registry in ``--weights-dir`` / ``$FSSBENCH_WEIGHTS``
    (``<name>.pt``), then in the zoo cache (as resolved at import time), then the shipped copy.
    """
    from fssbench.backbones.registry import register_backbone
    from fssbench.backbones.weights import WeightsSpec

    for name, spec in ZOO.items():
        file = checkpoint_file(name)
        register_backbone(
            name,
            _factory(name),
            kind="zoo",
            arch=spec.arch,
            model=spec.model,
            pretraining=spec.pretraining,
            description=f"embedded zoo, trained on the synthetic pretraining classes; {spec.upgrade}",
            has_text=spec.family == "clip",
            text_dim=spec.config.get("embed_dim") if spec.family == "clip" else None,
            layers=layer_specs(spec),
            weights=WeightsSpec(
                filenames=(file,),
                cache_paths=(str(cache_dir() / file), str(SHIPPED_DIR / file)),
                source="none, it is built locally by `fssbench zoo build`",
            ),
            overwrite=True,
            upgrade=spec.upgrade,
        )


try:  # the registry is optional for the zoo itself (e.g. while it is being written)
    register_zoo()
except ImportError:  # pragma: no cover
    pass
