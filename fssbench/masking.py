"""Support masking shared by every method: masked average pooling, feature masking, hybrid masking.

They live in the harness so that methods never import each other: the prototype baseline, HSNet,
HSNet-HM and DiffUp's BAFT all mask support features the same way, from one place.

* ``masked_average``: masked average pooling (MAP) of features by a mask resized to them;
* ``mask_features``: features multiplied by the resized mask (HSNet's support masking);
* hybrid masking (HM, Moon et al., ECCV 2022): methods that mask support features by the (resized)
  support mask lose the object's fine detail where the masked feature vanishes. HM extracts the
  support features a second time, from the support image multiplied by its mask ("input masking"),
  and keeps, element-wise, the feature-masked value where it is positive and the input-masked value
  elsewhere::

      hybrid = where(feature_masked > 0, feature_masked, input_masked)

  The authors multiply the *normalised* image by the mask, so masked-out pixels become 0 after
  normalisation, i.e. the backbone's mean colour in RGB. ``input_masked_images`` reproduces that in
  the [0, 1] image space our backbones take (``fill="mean"``); ``fill="zero"`` gives black instead.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from fssbench.backbones.base import Backbone

FILLS = ("mean", "zero")


def resize_mask(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``[N, H, W]`` -> ``[N, 1, h, w]`` resized bilinearly with ``align_corners=True`` (HSNet's rule)."""
    return F.interpolate(mask.unsqueeze(1).float(), size=tuple(size), mode="bilinear", align_corners=True)


def masked_average(feat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``feat [N, C, h, w]``, ``mask [N, H, W]`` -> prototypes ``[N, C]`` (mask resized bilinearly)."""
    m = resize_mask(mask, feat.shape[-2:]).to(feat.dtype)
    return (feat * m).sum(dim=(2, 3)) / m.sum(dim=(2, 3)).clamp_min(1e-5)


def mask_features(feats: Mapping[str, torch.Tensor], masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each feature times the mask ``[N, H, W]`` resized bilinearly (``align_corners=True``) to it."""
    return {name: feat * resize_mask(masks, feat.shape[-2:]).to(feat.dtype) for name, feat in feats.items()}


def input_masked_images(backbone: Backbone, images: torch.Tensor, masks: torch.Tensor, fill: str = "mean") -> torch.Tensor:
    """Support images ``[N, 3, H, W]`` in [0, 1] multiplied by their masks ``[N, H, W]``.

    ``fill="mean"`` multiplies in the backbone's normalised space (the authors' code: outside the mask
    the backbone sees 0 after normalisation); ``fill="zero"`` multiplies the [0, 1] image.
    """
    m = masks.to(images.dtype).unsqueeze(1)
    if fill == "zero":
        return images * m
    if fill != "mean":
        raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
    # normalize(x * m + mean * (1 - m)) == m * normalize(x) for any m; for a {0, 1} mask it is bit-exact
    # (the image inside, exactly 0 after normalisation outside), unlike un-normalising m * normalize(x).
    mean = torch.tensor(backbone.mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return images * m + mean * (1 - m)


def hybrid_combine(feature_masked: torch.Tensor, input_masked: torch.Tensor) -> torch.Tensor:
    """The HM rule for one layer: the feature-masked value where > 0, else the input-masked value."""
    return torch.where(feature_masked > 0, feature_masked, input_masked)


@torch.no_grad()
def hybrid_masked_features(
    backbone: Backbone,
    support_images: torch.Tensor,
    support_masks: torch.Tensor,
    layer_names: Sequence[str],
    masked_feats: Mapping[str, torch.Tensor],
    *,
    fill: str = "mean",
    extract: Callable[[torch.Tensor], Mapping[str, torch.Tensor]] | None = None,
) -> dict[str, torch.Tensor]:
    """Hybrid-masked support features, one per name in ``layer_names``.

    ``support_images``: ``[N, 3, H, W]`` in [0, 1]; ``support_masks``: ``[N, H, W]`` {0, 1};
    ``masked_feats``: the feature-masked support features (``name -> [N, C, h, w]``) of the method.
    The backbone is run once more on the input-masked images; ``extract`` replaces that run when a
    method derives extra layers from the backbone's (it must return every name in ``layer_names``).
    """
    images = input_masked_images(backbone, support_images, support_masks, fill)
    if extract is None:
        input_feats = backbone(images, layers=list(layer_names))
    else:
        input_feats = extract(images)
    out: dict[str, torch.Tensor] = {}
    for name in layer_names:
        fm, im = masked_feats[name], input_feats[name]
        if fm.shape != im.shape:
            raise ValueError(f"layer {name}: feature-masked {tuple(fm.shape)} vs input-masked {tuple(im.shape)}")
        out[name] = hybrid_combine(fm, im)
    return out
