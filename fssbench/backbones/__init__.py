"""Frozen feature backbones behind one interface (see ``base.py``), and their registry.

Importing this package registers the built-ins -- ``clip-rn50``, ``clip-rn101``, ``clip-vit-b16``
(open_clip, OpenAI weights), ``in1k-rn50``, ``in1k-rn101``, ``in1k-rn152``, ``vgg16`` (torchvision,
ImageNet weights) -- and, when present, the embedded zoo (``fssbench.backbones.zoo``). Heavy
libraries (open_clip, torchvision) are imported only when a backbone is built.

    from fssbench.backbones import create_backbone
    bb = create_backbone("clip-rn50")                    # weights from --weights-dir / $FSSBENCH_WEIGHTS / caches
    feats = bb(images01, layers="stages")                # {"layer1.2": [B,256,H/4,W/4], ...}
"""

from __future__ import annotations

import importlib
import importlib.util

from fssbench.backbones.base import Backbone, LayerSpec
from fssbench.backbones.registry import (
    BackboneInfo,
    backbone_names,
    create_backbone,
    get_backbone_info,
    list_backbones,
    register_backbone,
    unregister_backbone,
    weights_status,
)
from fssbench.backbones.weights import (
    ENV_VAR,
    WeightsSpec,
    WeightsStatus,
    find_weights,
    load_state_dict_file,
    load_weights_into,
    resolve_weights_dir,
)

from fssbench.backbones import clip as _clip  # noqa: E402,F401  (registers clip-*)
from fssbench.backbones import resnet as _resnet  # noqa: E402,F401  (registers in1k-*, vgg16)

if importlib.util.find_spec("fssbench.backbones.zoo") is not None:  # the embedded zoo registers itself
    importlib.import_module("fssbench.backbones.zoo")

__all__ = [
    "ENV_VAR",
    "Backbone",
    "BackboneInfo",
    "LayerSpec",
    "WeightsSpec",
    "WeightsStatus",
    "backbone_names",
    "create_backbone",
    "find_weights",
    "get_backbone_info",
    "list_backbones",
    "load_state_dict_file",
    "load_weights_into",
    "register_backbone",
    "resolve_weights_dir",
    "unregister_backbone",
    "weights_status",
]
