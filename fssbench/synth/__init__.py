"""The embedded synthetic few-shot segmentation world (``fssbench synth``).

Twenty compositional classes (shape x colour x texture) in four PASCAL-5i-style folds, rendered
with look-alike distractors, clutter, occlusion, textured backgrounds and a 255 boundary band,
and written in the exact PASCAL-5i layout HSNet reads (see ``fssbench.synth.world``). A second,
disjoint set of 48 classes renders in memory for pretraining small backbones
(``render_pretrain_batch``). Everything is a pure function of the seed.
"""

from fssbench.synth.classes import (
    COLOURS,
    SHAPES,
    TEXTURES,
    ClassDef,
    class_name,
    fold_class_ids,
    fold_classes,
    pretrain_class_names,
    pretrain_classes,
)
from fssbench.synth.render import (
    SynthImage,
    render_fss_image,
    render_pretrain_batch,
    render_pretrain_image,
)
from fssbench.synth.world import PRESETS, Preset, generate, read_meta, voc_palette

__all__ = [
    "COLOURS",
    "PRESETS",
    "SHAPES",
    "TEXTURES",
    "ClassDef",
    "Preset",
    "SynthImage",
    "class_name",
    "fold_class_ids",
    "fold_classes",
    "generate",
    "pretrain_class_names",
    "pretrain_classes",
    "read_meta",
    "render_fss_image",
    "render_pretrain_batch",
    "render_pretrain_image",
    "voc_palette",
]
