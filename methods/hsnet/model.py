"""HSNet: Hypercorrelation Squeeze Network (Min, Kang, Cho, ICCV 2021), as its authors' code runs.

Pipeline (one support, ``B`` episodes):

1. Block features of the frozen backbone for the query and the support (ResNet blocks before their
   final ReLU, as the backbone interface provides them).
2. Support features multiplied by the support mask, resized to each feature map with bilinear
   interpolation (``align_corners=True``); optionally hybrid masking (``methods.hm``).
3. One clamped cosine correlation per layer; the layers of a stage are stacked into one pyramid
   level, three levels (``methods.hsnet.correlation``).
4. The learner (``HPNLearner``): per level a squeezing block of three center-pivot 4D convolutions
   (each followed by GroupNorm(4) and ReLU) that strides the support dims, two mixing blocks that
   merge deep into shallow levels after upsampling the query dims, a mean over the support dims, and
   a 2D decoder (conv-ReLU-conv-ReLU, 2x bilinear upsampling, conv-ReLU-conv) to 2-class logits.
5. Logits upsampled (bilinear, ``align_corners=True``) to the input size.

K-shot: each support gives a 1-shot prediction; the argmax masks are summed, divided by the
largest vote count in the image (at least 1), and thresholded at 0.5 (``kshot_vote``).

Layer choice (``layers: "auto"``): the blocks of the last three stages of the backbone. For ResNet-50
and ResNet-101 that is exactly the authors' choice (layer2..layer4: 4+6+3 and 4+23+3 blocks). For
VGG-16 the authors use conv4_1..conv4_3, conv5_1..conv5_3 and pool5; with a backbone whose name
contains ``vgg`` and whose stages hold 2, 2, 3, 3, 3 conv layers, pool5 is derived from the last
conv layer as ``max_pool2d(relu(conv5_3), 2, 2)`` (layer name ``"maxpool:<conv5_3 name>"``).

Submodule names follow the authors' (``hpn_learner.encoder_layer4.0.conv1.weight`` ...), so their
released checkpoints load directly (``methods.hsnet.checkpoint``).

Stitching (a learner trained on backbone A evaluated on backbone B). The learner's parameters depend
on the number of correlation layers per pyramid level, never on channels (correlations are cosines).
So a learner pairs with any CNN backbone whose last three stages give three resolutions:

* same blocks per stage (zoo-rn-s <-> zoo-clip-rn, IN1K-RN50 <-> CLIP-RN50): block i -> block i;
* other depths (RN50 <-> RN101, zoo-rn-s <-> zoo-rn-m): **relative-depth rule**: the i-th of the n
  trained blocks of a level takes the evaluation stage's block at the same relative depth,
  ``floor((i + 1/2) * m / n)`` of its m blocks (blocks repeat when the evaluation stage is shallower);
* incompatible (an explicit cell, no numbers): a ViT (its stages share one stride, so there is no
  pyramid to correlate), VGG paired with a ResNet (pool5 has no ResNet counterpart), or explicit
  ``layers`` (names of one backbone).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, ClassVar, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fssbench.backbones.base import Backbone
from fssbench.episode import EpisodeBatch
from fssbench.errors import UserError
from fssbench.masking import hybrid_masked_features, mask_features
from fssbench.methods import Capabilities, Method, TrainConfig, register_method
from fssbench.options import Option
from methods.hsnet.checkpoint import AuthorsCheckpoint, load_checkpoint, load_learner_state, split_state_dict
from methods.hsnet.conv4d import CenterPivotConv4d
from methods.hsnet.correlation import hypercorrelation_pyramid

POOL_PREFIX = "maxpool:"
"""A derived layer: ``max_pool2d(relu(feature of <name>), 2, 2)`` (VGG-16's pool5 in HSNet)."""

VOTE_THRESHOLD = 0.5

# --------------------------------------------------------------------------------------------------
# Layer selection
# --------------------------------------------------------------------------------------------------


def _stages(backbone: Backbone) -> "OrderedDict[int, list[str]]":
    stages: OrderedDict[int, list[str]] = OrderedDict()
    for spec in sorted(backbone.layers, key=lambda s: s.stage):
        stages.setdefault(spec.stage, []).append(spec.name)
    return stages


def _looks_like_vgg16(backbone: Backbone, stages: "OrderedDict[int, list[str]]") -> bool:
    return "vgg" in (backbone.name or "").lower() and [len(v) for v in stages.values()] == [2, 2, 3, 3, 3]


def base_layer(name: str) -> str:
    """The backbone layer a (possibly derived) feature name is computed from."""
    return name[len(POOL_PREFIX) :] if name.startswith(POOL_PREFIX) else name


def select_layer_groups(backbone: Backbone, layers: Any = "auto") -> list[list[str]]:
    """The three pyramid levels, shallow to deep, each a list of feature names in forward order.

    ``layers``: ``"auto"`` (see the module doc), a flat list of layer names (grouped by the stage
    their ``LayerSpec`` declares; must span exactly three stages), or a list of three lists of names
    (explicit levels, shallow to deep). Names may use the ``"maxpool:<layer>"`` derived form.
    """
    stages = _stages(backbone)
    known = {s.name: s for s in backbone.layers}
    if isinstance(layers, str):
        if layers != "auto":
            raise UserError(f"hsnet option layers must be 'auto' or a list of layer names, got {layers!r}")
        if _looks_like_vgg16(backbone, stages):
            conv4, conv5 = list(stages.values())[3], list(stages.values())[4]
            return [list(conv4), list(conv5), [POOL_PREFIX + conv5[-1]]]
        if len(stages) < 3:
            raise UserError(
                f"hsnet needs a backbone with at least 3 stages for layers='auto'; {backbone.name or 'this backbone'} "
                f"has {len(stages)}; pass layers=[[...], [...], [...]] (three groups of layer names)"
            )
        return [list(v) for v in list(stages.values())[-3:]]

    layers = list(layers)
    if not layers:
        raise UserError("hsnet option layers is empty")

    def check(name: Any) -> str:
        if not isinstance(name, str) or base_layer(name) not in known:
            raise UserError(
                f"hsnet option layers: {name!r} is not a layer of {backbone.name or 'the backbone'} "
                f"(layers: {', '.join(known)})"
            )
        return name

    if all(isinstance(g, (list, tuple)) for g in layers):
        groups = [[check(n) for n in g] for g in layers]
    elif all(isinstance(n, str) for n in layers):
        order = {s.name: i for i, s in enumerate(backbone.layers)}
        by_key: dict[tuple[int, bool], list[str]] = {}
        for n in sorted((check(n) for n in layers), key=lambda n: (order[base_layer(n)], n.startswith(POOL_PREFIX))):
            by_key.setdefault((known[base_layer(n)].stage, n.startswith(POOL_PREFIX)), []).append(n)
        groups = [by_key[k] for k in sorted(by_key)]
    else:
        raise UserError("hsnet option layers must be a list of layer names or a list of three lists of names")
    if len(groups) != 3 or any(not g for g in groups):
        raise UserError(f"hsnet needs exactly 3 non-empty layer groups (pyramid levels); got {len(groups)}")
    return groups


# --------------------------------------------------------------------------------------------------
# The learner (authors' module names)
# --------------------------------------------------------------------------------------------------


def building_block(
    in_channels: int, out_channels: Sequence[int], kernel_sizes: Sequence[int], strides: Sequence[int], group: int = 4
) -> nn.Sequential:
    """Center-pivot 4D conv -> GroupNorm -> ReLU, repeated; strides apply to the support dims only."""
    if not len(out_channels) == len(kernel_sizes) == len(strides):
        raise ValueError("out_channels, kernel_sizes and strides differ in length")
    mods: list[nn.Module] = []
    for i, (outch, k, s) in enumerate(zip(out_channels, kernel_sizes, strides)):
        inch = in_channels if i == 0 else out_channels[i - 1]
        mods.append(CenterPivotConv4d(inch, outch, (k,) * 4, (1, 1, s, s), (k // 2,) * 4))
        mods.append(nn.GroupNorm(group, outch))
        mods.append(nn.ReLU(inplace=True))
    return nn.Sequential(*mods)


def upsample_query_dims(corr: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinearly resize the query dims (``Ha, Wa``) of ``[B, C, Ha, Wa, Hb, Wb]`` to ``size``."""
    bsz, ch, ha, wa, hb, wb = corr.shape
    x = corr.permute(0, 4, 5, 1, 2, 3).contiguous().view(bsz * hb * wb, ch, ha, wa)
    x = F.interpolate(x, tuple(size), mode="bilinear", align_corners=True)
    oh, ow = x.shape[-2:]
    return x.view(bsz, hb, wb, ch, oh, ow).permute(0, 3, 4, 5, 1, 2).contiguous()


class HPNLearner(nn.Module):
    """Squeeze (per level) -> mix (deep into shallow) -> mean over support dims -> 2D decoder.

    ``inch``: the number of stacked correlation layers per level, **deepest first**.
    """

    def __init__(self, inch: Sequence[int]) -> None:
        super().__init__()
        if len(inch) != 3:
            raise ValueError(f"HPNLearner takes 3 pyramid levels, got {list(inch)}")
        c1, c2, c3 = 16, 64, 128
        self.inch = tuple(int(c) for c in inch)
        # Squeezing blocks (support dims strided down).
        self.encoder_layer4 = building_block(self.inch[0], [c1, c2, c3], [3, 3, 3], [2, 2, 2])
        self.encoder_layer3 = building_block(self.inch[1], [c1, c2, c3], [5, 3, 3], [4, 2, 2])
        self.encoder_layer2 = building_block(self.inch[2], [c1, c2, c3], [5, 5, 3], [4, 4, 2])
        # Mixing blocks.
        self.encoder_layer4to3 = building_block(c3, [c3, c3, c3], [3, 3, 3], [1, 1, 1])
        self.encoder_layer3to2 = building_block(c3, [c3, c3, c3], [3, 3, 3], [1, 1, 1])
        # Decoder.
        self.decoder1 = nn.Sequential(
            nn.Conv2d(c3, c3, (3, 3), padding=(1, 1), bias=True),
            nn.ReLU(),
            nn.Conv2d(c3, c2, (3, 3), padding=(1, 1), bias=True),
            nn.ReLU(),
        )
        self.decoder2 = nn.Sequential(
            nn.Conv2d(c2, c2, (3, 3), padding=(1, 1), bias=True),
            nn.ReLU(),
            nn.Conv2d(c2, 2, (3, 3), padding=(1, 1), bias=True),
        )

    def forward(self, pyramid: Sequence[torch.Tensor]) -> torch.Tensor:
        """``pyramid``: three ``[B, n, Ha, Wa, Hb, Wb]`` correlations, deepest first -> ``[B, 2, h, w]``."""
        sqz4 = self.encoder_layer4(pyramid[0])
        sqz3 = self.encoder_layer3(pyramid[1])
        sqz2 = self.encoder_layer2(pyramid[2])

        mix43 = self.encoder_layer4to3(upsample_query_dims(sqz4, sqz3.shape[-4:-2]) + sqz3)
        mix432 = self.encoder_layer3to2(upsample_query_dims(mix43, sqz2.shape[-4:-2]) + sqz2)

        bsz, ch, ha, wa = mix432.shape[:4]
        encoded = mix432.view(bsz, ch, ha, wa, -1).mean(dim=-1)

        decoded = self.decoder1(encoded)
        # The authors upsample to a square of twice the *width* (their inputs are square); the final
        # resize to the input size restores the aspect ratio (align_corners keeps the geometry).
        side = decoded.shape[-1] * 2
        decoded = F.interpolate(decoded, (side, side), mode="bilinear", align_corners=True)
        return self.decoder2(decoded)


# --------------------------------------------------------------------------------------------------
# K-shot voting
# --------------------------------------------------------------------------------------------------


def vote_fraction(shot_masks: torch.Tensor) -> torch.Tensor:
    """Summed votes of per-support binary predictions ``[B, K, H, W]`` divided by each image's largest
    vote count (guarded to be at least 1): ``[B, H, W]`` float in [0, 1]."""
    votes = shot_masks.long().sum(dim=1).float()
    bsz = votes.shape[0]
    return votes / votes.view(bsz, -1).max(dim=1).values.clamp(min=1).view(bsz, 1, 1)


def kshot_vote(shot_masks: torch.Tensor, threshold: float = VOTE_THRESHOLD) -> torch.Tensor:
    """HSNet's k-shot rule on per-support binary predictions ``[B, K, H, W]`` -> ``[B, H, W]`` long.

    Votes are summed over the K supports, divided by the image's largest vote count (guarded to be
    at least 1) and thresholded: ``votes / max(max_vote, 1) >= threshold``. With K = 1 the single
    prediction is returned as is.
    """
    if shot_masks.shape[1] == 1:
        return shot_masks[:, 0].long()
    return (vote_fraction(shot_masks) >= threshold).long()


# --------------------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------------------


@register_method
class HSNet(Method):
    """Hypercorrelation Squeeze Network.

    Options: ``layers`` ("auto" or names), ``hybrid_masking``, and ``fg_weight``: the foreground
    class's weight in the training cross-entropy. 1.0 is the authors' objective; a larger weight
    shortens the all-background plateau early in training when objects cover a small share of the
    image (the embedded world's objects cover ~5% of it, PASCAL's ~25%). Inference is unaffected.
    """

    name = "hsnet"
    capabilities = Capabilities(
        kinds=frozenset({"mask", "bbox", "scribble"}), trains=True, stitchable=True, batchable=True
    )
    option_specs: ClassVar[Mapping[str, Option]] = {
        "layers": Option("auto", (str, list), "auto; layer names; or three groups of names (shallow to deep)",
                         choices=("auto",), items=Option(None, (str, list), items=Option(None, str), min_len=1), min_len=1),
        "hybrid_masking": Option(False, bool, "HM's support masking (fssbench.masking)"),
        "fg_weight": Option(1.0, float, "foreground weight in the training cross-entropy (1.0: the authors' loss)", gt=0),
    }
    # The authors: Adam, lr 1e-3 constant, no weight decay; batch 20 (PASCAL-5i, FSS-1000) or 40
    # (COCO-20i) split over 4 GPUs; 1-shot episodes at 400x400, no augmentation; an epoch is every
    # training image once (PASCAL fold 0: 11394 episodes); up to 2000 epochs, keeping the checkpoint
    # with the best validation mIoU. Epoch/episode counts here are the suite's budget, not theirs.
    default_train = TrainConfig(
        optimizer="adam", lr=1e-3, weight_decay=0.0, batch_size=20, schedule="constant", shot=1, kind="mask"
    )

    def __init__(self, backbone: Backbone, **options: Any) -> None:
        super().__init__(backbone, **options)
        self.layer_groups = select_layer_groups(backbone, self.options["layers"])
        self.feature_names = [n for g in self.layer_groups for n in g]
        self.backbone_layers = list(dict.fromkeys(base_layer(n) for n in self.feature_names))
        self.hpn_learner = HPNLearner([len(g) for g in reversed(self.layer_groups)])

    # --- stitching ------------------------------------------------------------------------------
    @classmethod
    def stitch_incompatible(cls, options: Any, train: Any, eval_: Any) -> str | None:
        """See the module doc: the pairs no rule maps (ViT, VGG <-> ResNet, explicit layers)."""
        if options.get("layers", "auto") != "auto":
            return "hsnet with explicit layers names one backbone's layers; no rule maps them onto another"
        kinds = []
        for b in (train, eval_):
            specs = list(b.layer_specs() if hasattr(b, "layer_specs") else b.layers)
            strides = [max(s.stride for s in specs if s.stage == st) for st in sorted({s.stage for s in specs})]
            if getattr(b, "arch", "") == "vit" or len(strides) < 3 or len(set(strides[-3:])) < 3:
                return (
                    f"HSNet's learner correlates three resolutions; {b.name} ({getattr(b, 'arch', '?')}) has its last stages "
                    f"at strides {strides[-3:]}, so no rule maps the learner onto it"
                )
            kinds.append("vgg" in (b.name or "").lower())
        if kinds[0] != kinds[1]:
            return f"HSNet's VGG levels (conv4, conv5, pool5) have no counterpart in {eval_.name if kinds[0] else train.name}"
        return None

    def set_backbone(self, backbone: Backbone) -> None:
        """Stitch: map each level's trained blocks onto the new backbone by the relative-depth rule."""
        super().set_backbone(backbone)
        if _looks_like_vgg16(backbone, _stages(backbone)):  # VGG <-> VGG: the same named levels
            self.layer_groups = select_layer_groups(backbone, "auto")
            self.feature_names = [n for g in self.layer_groups for n in g]
            self.backbone_layers = list(dict.fromkeys(base_layer(n) for n in self.feature_names))
            return
        stages = list(_stages(backbone).values())[-3:]
        groups = []
        for trained, blocks in zip(self.layer_groups, stages):
            n, m = len(trained), len(blocks)
            groups.append([blocks[min(m - 1, (2 * i + 1) * m // (2 * n))] for i in range(n)])
        self.layer_groups = groups
        self.feature_names = [n for g in groups for n in g]
        self.backbone_layers = list(dict.fromkeys(base_layer(n) for n in self.feature_names))

    # --- features ------------------------------------------------------------------------------
    @torch.no_grad()
    def extract_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The selected features of ``images`` ``[N, 3, H, W]`` in [0, 1] (derived layers included)."""
        feats = dict(self.backbone(images, layers=self.backbone_layers))
        for name in self.feature_names:
            if name.startswith(POOL_PREFIX):
                feats[name] = F.max_pool2d(F.relu(feats[base_layer(name)]), kernel_size=2, stride=2)
        return {n: feats[n] for n in self.feature_names}

    @torch.no_grad()
    def support_features(self, images: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Masked (or, with ``hybrid_masking``, hybrid-masked) support features."""
        masked = mask_features(self.extract_features(images), masks)
        if self.options["hybrid_masking"]:
            masked = hybrid_masked_features(
                self.backbone, images, masks, self.feature_names, masked, extract=self.extract_features
            )
        return masked

    def _pyramid(self, q: dict[str, torch.Tensor], s: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        with torch.no_grad():
            return hypercorrelation_pyramid(
                [[q[n] for n in g] for g in self.layer_groups], [[s[n] for n in g] for g in self.layer_groups]
            )

    def correlations(self, query_image: torch.Tensor, support_image: torch.Tensor, support_mask: torch.Tensor) -> list[torch.Tensor]:
        """The hypercorrelation pyramid (deepest first) of one support per episode."""
        return self._pyramid(self.extract_features(query_image), self.support_features(support_image, support_mask))

    # --- forward ---------------------------------------------------------------------------------
    def forward(self, query_image: torch.Tensor, support_image: torch.Tensor, support_mask: torch.Tensor) -> torch.Tensor:
        """1-shot logits ``[B, 2, H, W]`` (the authors' ``forward``): images ``[B, 3, H, W]`` in [0, 1]."""
        logits = self.hpn_learner(self.correlations(query_image, support_image, support_mask))
        return F.interpolate(logits, query_image.shape[-2:], mode="bilinear", align_corners=True)

    def shot_logits(self, query_image: torch.Tensor, support_images: torch.Tensor, support_masks: torch.Tensor) -> torch.Tensor:
        """Per-support 1-shot logits ``[B, K, 2, H, W]``.

        Query features are computed once; each support runs through the backbone and the learner on
        its own, as the authors' k-shot loop does (bounds the 4D learner's memory and keeps the
        numbers bit-identical to theirs: batching the K supports changes conv rounding).
        """
        q = self.extract_features(query_image)
        out = []
        for i in range(support_images.shape[1]):
            s = self.support_features(support_images[:, i], support_masks[:, i])
            logits = self.hpn_learner(self._pyramid(q, s))
            out.append(F.interpolate(logits, query_image.shape[-2:], mode="bilinear", align_corners=True))
        return torch.stack(out, dim=1)

    def _batch_logits(self, batch: EpisodeBatch) -> torch.Tensor:
        if batch.support_fg is None:
            raise UserError(f"{self.name} needs support masks (kinds mask, bbox, scribble); got kind '{batch.kind}'")
        return self.shot_logits(batch.query_image, batch.support_images, batch.support_fg)

    # --- Method API --------------------------------------------------------------------------------
    def predict(self, batch: EpisodeBatch) -> torch.Tensor:
        """Scores ``[B, 2, H, W]`` whose argmax is the prediction.

        1-shot: the logits. K > 1: the authors' vote, encoded as scores: foreground = vote fraction
        ``votes / max(max_vote, 1)``, background = just under the threshold, so the argmax is exactly
        ``kshot_vote`` at input resolution and a protocol that resizes scores back to the original
        label resizes the vote fraction (the authors resize each shot's logits first, then vote).
        """
        logits = self._batch_logits(batch)
        if logits.shape[1] == 1:
            return logits[:, 0]
        frac = vote_fraction(logits.argmax(dim=2))
        return torch.stack([torch.full_like(frac, VOTE_THRESHOLD - 1e-4), frac], dim=1)

    def predict_mask(self, batch: EpisodeBatch) -> torch.Tensor:
        """Binary ``[B, H, W]``: the argmax for 1-shot, the authors' vote (``kshot_vote``) for K > 1."""
        return kshot_vote(self._batch_logits(batch).argmax(dim=2))

    def loss(self, batch: EpisodeBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """The authors' objective: 2-class cross-entropy over every query pixel, mean-reduced; ignore
        pixels count as background (their loader sets the 255 boundary to 0). With K > 1 every
        support is a 1-shot episode (the authors train 1-shot). ``fg_weight`` != 1 weights the
        foreground class (weighted mean, as ``F.cross_entropy(weight=...)`` reduces it)."""
        logits = self._batch_logits(batch)  # [B, K, 2, H, W]
        bsz, k = logits.shape[:2]
        target = batch.query_mask > 0.5
        if batch.query_ignore is not None:
            target = target & ~batch.query_ignore.bool()
        target = target.long().unsqueeze(1).expand(bsz, k, *target.shape[1:]).reshape(bsz * k, -1)
        fg_weight = float(self.options["fg_weight"])
        weight = None if fg_weight == 1.0 else torch.tensor([1.0, fg_weight], device=logits.device, dtype=logits.dtype)
        loss = F.cross_entropy(logits.reshape(bsz * k, 2, -1), target, weight=weight)
        return loss, {"loss": float(loss.detach())}

    # --- state -------------------------------------------------------------------------------------
    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        """Our own ``trainable_state`` or an authors' state dict (``module.``/``backbone.`` keys)."""
        load_learner_state(self, split_state_dict(state))

    def load_authors_checkpoint(self, path: str) -> AuthorsCheckpoint:
        """Load a released HSNet(-HM) checkpoint's learner; its backbone weights are returned, not loaded."""
        return load_checkpoint(self, path)

    def load_released(self, path: str) -> None:
        """A suite's ``checkpoint:`` entry: the authors' ``.pt`` (learner keys and shapes checked)."""
        self.load_authors_checkpoint(path)
