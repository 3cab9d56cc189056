"""ImageNet backbones from torchvision: ResNet-50/101/152 and VGG-16 (HSNet's feature layers).

ResNet (``in1k-rn50`` / ``in1k-rn101`` / ``in1k-rn152``)
    ``blocks``: every bottleneck, named ``layer<s>.<i>`` (stage ``s`` = 1..4, ``i`` from 0), strides
    4/8/16/32, channels 256/512/1024/2048. A block's feature is ``bn3(conv3(...)) + identity``
    *before* the block's final ReLU, exactly as HSNet's ``extract_feat_res`` records it (the next
    block then consumes the ReLU'd tensor). ``stages``: ``layer1.<last>`` .. ``layer4.<last>``.
    Stem and ``fc`` are not exposed (``fc`` is dropped). Any torchvision ResNet works
    (:class:`TorchvisionResNet`), BasicBlock variants included (pre-ReLU of ``bn2(conv2) + identity``).

VGG-16 (``vgg16``)
    HSNet uses ``feat_ids = [17, 19, 21, 24, 26, 28, 30]`` of ``vgg16.features``: the outputs of
    conv4_1, conv4_2, conv4_3, conv5_1, conv5_2, conv5_3 -- conv outputs, i.e. *before* their ReLU --
    and of the last max-pool (pool5), grouped ``[conv4_x] [conv5_x] [pool5]`` (its
    ``nbottlenecks = [2, 2, 3, 3, 3, 1]``). Here ``blocks`` are all 13 conv layers (pre-ReLU), named
    ``block<b>.<i>`` with stage ``b`` = the VGG block (strides 1, 2, 4, 8, 16), plus ``pool5.0``
    (stride 32, 512 channels) as stage 6, so HSNet's seven features are ``block4.*``, ``block5.*``,
    ``pool5.0`` and its three correlation groups are the last three stages. The classifier is dropped.

Weights (torchvision's file names; ``IMAGENET1K_V1`` preferred when both are present because it is
what ``pretrained=True`` -- and therefore HSNet -- used): ``resnet50-0676ba61.pth`` (V1) or
``resnet50-11ad3fa6.pth`` (V2); ``resnet101-63fe2227.pth`` / ``resnet101-cd907fc2.pth``;
``resnet152-394f9c45.pth`` / ``resnet152-f82ba261.pth``; ``vgg16-397923af.pth``. Looked for in the
weights directory and in torch hub's cache (``~/.cache/torch/hub/checkpoints``). Input
normalisation: ImageNet mean/std.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fssbench.backbones.base import Backbone, LayerSpec
from fssbench.backbones.registry import register_backbone
from fssbench.backbones.weights import WeightsSpec, load_state_dict_file, load_weights_into

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_URL = "https://download.pytorch.org/models/"

__all__ = [
    "TorchvisionResNet",
    "VGGFeatures",
    "bottleneck_pre_relu",
    "vgg_features",
    "resnet_layer_specs",
    "vgg_layer_specs",
]


# --- shared helpers (also used by the CLIP ModifiedResNet) ----------------------------------------
def bottleneck_pre_relu(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run one residual block and return its output *before* the final ReLU.

    Handles torchvision ``Bottleneck`` / ``BasicBlock`` and open_clip's ``Bottleneck`` (whose
    downsampling is an average pool after conv2, and whose ReLUs are ``act1..act3``). No in-place
    op touches a tensor that is returned.
    """
    if hasattr(block, "conv3"):
        out = F.relu(block.bn1(block.conv1(x)))
        out = F.relu(block.bn2(block.conv2(out)))
        pool = getattr(block, "avgpool", None)
        if pool is not None:
            out = pool(out)
        out = block.bn3(block.conv3(out))
    else:  # BasicBlock
        out = F.relu(block.bn1(block.conv1(x)))
        out = block.bn2(block.conv2(out))
    identity = block.downsample(x) if block.downsample is not None else x
    return out + identity


def _block_channels(block: nn.Module) -> int:
    return int(block.bn3.num_features if hasattr(block, "bn3") else block.bn2.num_features)


def _block_stride(block: nn.Module) -> int:
    s = getattr(block, "stride", 1)
    return int(s[0] if isinstance(s, (tuple, list)) else s)


def resnet_layer_specs(stages: list[nn.Sequential], stem_stride: int = 4) -> list[LayerSpec]:
    """``layer<s>.<i>`` specs for a list of residual stages (strides from the blocks themselves)."""
    specs: list[LayerSpec] = []
    stride = stem_stride
    for s, stage in enumerate(stages, start=1):
        for i, block in enumerate(stage):
            stride *= _block_stride(block)
            specs.append(LayerSpec(f"layer{s}.{i}", _block_channels(block), stride, s))
    return specs


def static_resnet_specs(depths: tuple[int, ...], widths: tuple[int, ...], expansion: int = 4) -> list[LayerSpec]:
    """Declared specs without building the network (registry listings)."""
    specs = []
    for s, (d, w) in enumerate(zip(depths, widths), start=1):
        stride = 4 * 2 ** (s - 1)
        specs += [LayerSpec(f"layer{s}.{i}", w * expansion, stride, s) for i in range(d)]
    return specs


def run_resnet_stages(
    stages: list[nn.Sequential], x: torch.Tensor, names: list[str]
) -> dict[str, torch.Tensor]:
    """Run residual stages on the stem output, recording pre-ReLU block outputs; stops after the last request."""
    wanted = set(names)
    out: dict[str, torch.Tensor] = {}
    for s, stage in enumerate(stages, start=1):
        for i, block in enumerate(stage):
            if len(out) == len(wanted):
                return out
            pre = bottleneck_pre_relu(block, x)
            name = f"layer{s}.{i}"
            if name in wanted:
                out[name] = pre
            x = F.relu(pre)
    return out


# --- torchvision ResNet ---------------------------------------------------------------------------
class TorchvisionResNet(Backbone):
    """Any torchvision ResNet as a block-feature backbone (``fc`` and global pooling dropped)."""

    arch = "cnn"
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self, net: nn.Module, name: str = "", pretraining: str = "in1k") -> None:
        super().__init__()
        net.fc = nn.Identity()
        net.avgpool = nn.Identity()
        self.net = net
        self.name = name
        self.pretraining = pretraining
        self._layers = resnet_layer_specs(self._stages())

    def _stages(self) -> list[nn.Sequential]:
        return [self.net.layer1, self.net.layer2, self.net.layer3, self.net.layer4]

    def _extract(self, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        n = self.net
        x = n.maxpool(F.relu(n.bn1(n.conv1(x))))
        return run_resnet_stages(self._stages(), x, names)


def _build_torchvision_resnet(arch: str, name: str) -> Callable[..., Backbone]:
    def factory(checkpoint: Path | None = None) -> Backbone:
        import torchvision.models as tvm

        net = getattr(tvm, arch)(weights=None)
        if checkpoint is not None:
            sd = load_state_dict_file(checkpoint)
            net.fc = nn.Identity()  # the classifier is not kept; the loader stays strict on the rest
            load_weights_into(net, sd, path=checkpoint, backbone=name, ignore_prefixes=("fc.",))
        return TorchvisionResNet(net, name=name, pretraining="in1k" if checkpoint is not None else "random")

    return factory


# --- VGG ------------------------------------------------------------------------------------------
def vgg_layer_specs(features: nn.Sequential) -> list[LayerSpec]:
    """``block<b>.<i>`` for every conv (pre-ReLU) and ``pool<last>.0`` for the final max-pool."""
    specs: list[LayerSpec] = []
    block, idx, stride, channels = 1, 0, 1, 3
    mods = list(features)
    for j, m in enumerate(mods):
        if isinstance(m, nn.Conv2d):
            channels = m.out_channels
            specs.append(LayerSpec(f"block{block}.{idx}", channels, stride, block))
            idx += 1
        elif isinstance(m, nn.MaxPool2d):
            stride *= 2
            if j == len(mods) - 1:
                specs.append(LayerSpec(f"pool{block}.0", channels, stride, block + 1))
            block, idx = block + 1, 0
    return specs


class VGGFeatures(Backbone):
    """torchvision VGG ``features`` with HSNet's layer semantics (conv outputs before ReLU, pool5)."""

    arch = "cnn"
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self, features: nn.Sequential, name: str = "", pretraining: str = "in1k") -> None:
        super().__init__()
        self.features = features
        self.name = name
        self.pretraining = pretraining
        self._layers = vgg_layer_specs(features)
        # module index -> layer name: the conv's (or its BN's) output is recorded before the ReLU
        self._record: dict[int, str] = {}
        specs = iter(self._layers)
        mods = list(features)
        for j, m in enumerate(mods):
            if isinstance(m, nn.Conv2d):
                k = j + 1 if j + 1 < len(mods) and isinstance(mods[j + 1], nn.BatchNorm2d) else j
                self._record[k] = next(specs).name
            elif isinstance(m, nn.MaxPool2d) and j == len(mods) - 1:
                self._record[j] = next(specs).name

    def _extract(self, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        wanted = set(names)
        out: dict[str, torch.Tensor] = {}
        for j, m in enumerate(self.features):
            if len(out) == len(wanted):
                break
            x = F.relu(x) if isinstance(m, nn.ReLU) else m(x)
            name = self._record.get(j)
            if name is not None and name in wanted:
                out[name] = x
        return out


_VGG_CFG = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}


def vgg_features(arch: str) -> nn.Sequential:
    """torchvision's ``<arch>().features`` with its initialisation, without building the 120M-parameter classifier."""
    import torchvision.models as tvm
    import torchvision.models.vgg as tvgg

    bn = arch.endswith("_bn")
    cfg = getattr(tvgg, "cfgs", {}).get(_VGG_CFG.get(arch.removesuffix("_bn"), ""))
    make = getattr(tvgg, "make_layers", None)
    if cfg is None or make is None:  # private helpers moved: fall back to the full model
        return getattr(tvm, arch)(weights=None).features
    features = make(cfg, batch_norm=bn)
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    return features


def _build_vgg(arch: str, name: str) -> Callable[..., Backbone]:
    def factory(checkpoint: Path | None = None) -> Backbone:
        features = vgg_features(arch)
        if checkpoint is not None:
            sd = load_state_dict_file(checkpoint)
            sd = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
            load_weights_into(features, sd, path=checkpoint, backbone=name)
        return VGGFeatures(features, name=name, pretraining="in1k" if checkpoint is not None else "random")

    return factory


# --- registration ---------------------------------------------------------------------------------
_RESNETS = {
    # name: (torchvision fn, depths, [V1 file, V2 file], words)
    "in1k-rn50": ("resnet50", (3, 4, 6, 3), ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"), "ResNet-50"),
    "in1k-rn101": ("resnet101", (3, 4, 23, 3), ("resnet101-63fe2227.pth", "resnet101-cd907fc2.pth"), "ResNet-101"),
    "in1k-rn152": ("resnet152", (3, 8, 36, 3), ("resnet152-394f9c45.pth", "resnet152-f82ba261.pth"), "ResNet-152"),
}

for _name, (_fn, _depths, _files, _words) in _RESNETS.items():
    register_backbone(
        _name,
        _build_torchvision_resnet(_fn, _name),
        kind="imagenet",
        arch="cnn",
        model=_words,
        pretraining="in1k",
        description=f"torchvision {_words}, ImageNet-1k supervised; bottleneck features before the final ReLU",
        layers=static_resnet_specs(_depths, (64, 128, 256, 512)),
        weights=WeightsSpec(filenames=_files, torch_hub=_files, source=TORCHVISION_URL + _files[0]),
    )

_VGG16_FILE = "vgg16-397923af.pth"
_VGG16_SPECS = (
    [LayerSpec(f"block1.{i}", 64, 1, 1) for i in range(2)]
    + [LayerSpec(f"block2.{i}", 128, 2, 2) for i in range(2)]
    + [LayerSpec(f"block3.{i}", 256, 4, 3) for i in range(3)]
    + [LayerSpec(f"block4.{i}", 512, 8, 4) for i in range(3)]
    + [LayerSpec(f"block5.{i}", 512, 16, 5) for i in range(3)]
    + [LayerSpec("pool5.0", 512, 32, 6)]
)
register_backbone(
    "vgg16",
    _build_vgg("vgg16", "vgg16"),
    kind="imagenet",
    arch="cnn",
    model="VGG-16",
    pretraining="in1k",
    description="torchvision VGG-16, ImageNet-1k; conv outputs before ReLU + pool5 (HSNet's feat_ids 17..30)",
    layers=_VGG16_SPECS,
    weights=WeightsSpec(filenames=(_VGG16_FILE,), torch_hub=(_VGG16_FILE,), source=TORCHVISION_URL + _VGG16_FILE),
)
