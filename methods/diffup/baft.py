"""BAFT: the backbone-agnostic feature transform (DiffUp Sec. 3.3.1), parameter-free.

Per backbone layer, every support cue becomes two *prior maps* on the query's feature grid, values
in [0, 1]:

* ``fg``: T(query feature, foreground prototype), the prototype being the masked average (MAP,
  ``fssbench.masking.masked_average``) of the support feature over the annotated foreground
  (mask / filled boxes / foreground scribble; the whole image for kind ``image``), or, for kind
  ``text``, the text-tower embedding of the prompt compared with the dense image embedding;
* ``bg``: T(query feature, background prototype) where a background annotation exists
  (``support_bg``), else ``1 - fg`` (image and text cues carry no background).

T is a distance ``d`` in [0, 2] between L2-normalised vectors turned into a similarity:

======== ================================================ ===========
metric   d                                                 note
======== ================================================ ===========
cosine   1 - cos(a, b)                                     default
l2       ||a^ - b^||_2                                     = sqrt(2 d_cos)
l1       ||a^ - b^||_1 / sqrt(C)                           C = channels
======== ================================================ ===========

and a conversion ``lin`` = 1 - d/2 (1 - d/max with max = 2, the largest distance), ``exp`` = exp(-d)
or ``inv`` = 1/(1 + d). ``cosine`` (= ``cosine:lin``) is (1 + cos)/2. Normalising first makes every
T invariant to the feature scale; bounding d by 2 (the ``sqrt(C)`` for L1) makes its range
independent of the channel count: both are what lets one decoder read priors of any backbone.

Affinity enhancement (Eq. 11): with the query's self-affinity ``A_ij = cos(f_i, f_j)`` at each
layer, a prior ``P`` becomes ``softmax(A / tau) @ P`` (rows sum to 1, so values stay in [0, 1]).

Support views: one support can be expanded into augmented views (UAPF needs a variance at k = 1):
a horizontal flip, a 0.75x rescale, a colour jitter and a 1.25x rescale with flip, in that fixed
order. They are deterministic, so no evaluation-time randomness comes from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from fssbench.backbones.base import Backbone
from fssbench.errors import UserError
from fssbench.masking import masked_average

METRICS = ("cosine", "l1", "l2")
CONVERSIONS = ("lin", "exp", "inv")
MAX_DISTANCE = 2.0


TRANSFORMS = (
    f"METRIC[:CONVERSION] with METRIC in {', '.join(METRICS)} and CONVERSION in {', '.join(CONVERSIONS)} "
    "(e.g. cosine, l2:exp, l1:inv)"
)


def transform_problem(name: object) -> str | None:
    """``None`` for a transform name such as ``cosine`` or ``l2:exp``, else what is allowed."""
    if isinstance(name, str):
        metric, _, conv = name.partition(":")
        if metric in METRICS and (conv or "lin") in CONVERSIONS:
            return None
    return TRANSFORMS


def parse_transform(name: str) -> tuple[str, str]:
    """``"cosine"``, ``"l2:exp"`` ... -> (metric, conversion); the conversion defaults to ``lin``."""
    if transform_problem(name):
        raise UserError(f"diffup transform {name!r} is unknown; use {TRANSFORMS}")
    metric, _, conv = name.partition(":")
    return metric, conv or "lin"


def distance(query: torch.Tensor, protos: torch.Tensor, metric: str) -> torch.Tensor:
    """``query [B, C, h, w]``, ``protos [B, N, C]`` -> distances ``[B, N, h, w]`` in [0, 2]."""
    b, c, h, w = query.shape
    q = F.normalize(query.float(), dim=1).flatten(2).transpose(1, 2)  # [B, hw, C]
    p = F.normalize(protos.float(), dim=2)  # [B, N, C]
    if metric == "cosine":
        d = 1.0 - torch.einsum("bqc,bnc->bqn", q, p)
    elif metric == "l2":
        d = torch.cdist(q, p, p=2.0)
    elif metric == "l1":
        d = torch.cdist(q, p, p=1.0) / math.sqrt(c)
    else:  # pragma: no cover - parse_transform guards
        raise ValueError(metric)
    return d.clamp(0.0, MAX_DISTANCE).transpose(1, 2).reshape(b, -1, h, w)


def convert(d: torch.Tensor, conversion: str) -> torch.Tensor:
    """Distance in [0, 2] -> similarity in [0, 1]."""
    if conversion == "lin":
        return 1.0 - d / MAX_DISTANCE
    if conversion == "exp":
        return torch.exp(-d)
    if conversion == "inv":
        return 1.0 / (1.0 + d)
    raise ValueError(conversion)  # pragma: no cover


def transform(query: torch.Tensor, protos: torch.Tensor, name: str) -> torch.Tensor:
    """T(query, prototypes): ``[B, C, h, w]`` x ``[B, N, C]`` -> priors ``[B, N, h, w]`` in [0, 1]."""
    metric, conv = parse_transform(name)
    return convert(distance(query, protos, metric), conv)


def affinity_enhance(query: torch.Tensor, priors: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. 11: ``softmax(cos(f_i, f_j) / tau) @ P``. ``query [B, C, h, w]``, ``priors [B, N, h, w]``."""
    b, n, h, w = priors.shape
    f = F.normalize(query.float(), dim=1).flatten(2)  # [B, C, hw]
    attn = torch.softmax(torch.einsum("bci,bcj->bij", f, f) / tau, dim=-1)  # [B, hw, hw]
    return torch.einsum("bij,bnj->bni", attn, priors.flatten(2).float()).reshape(b, n, h, w)


# --------------------------------------------------------------------------------------------------
# support views (augmentation)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class View:
    """A deterministic augmentation: horizontal flip, rescale factor, colour jitter."""

    flip: bool = False
    scale: float = 1.0
    colour: bool = False


IDENTITY = View()
AUGMENTATIONS: tuple[View, ...] = (View(flip=True), View(scale=0.75), View(colour=True), View(flip=True, scale=1.25))
"""The augmented views, in the order ``augment: n`` takes them."""


def jitter(images: torch.Tensor) -> torch.Tensor:
    """Fixed colour jitter of ``[N, 3, H, W]`` images in [0, 1]: brightness x1.2, contrast x0.8, saturation x0.7."""
    x = images * 1.2
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * 0.8 + mean
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * 0.7 + grey
    return x.clamp(0.0, 1.0)


def apply_view(images: torch.Tensor, view: View) -> torch.Tensor:
    """The view of images ``[N, 3, H, W]`` (flip, then rescale, then colour)."""
    x = images.flip(-1) if view.flip else images
    if view.scale != 1.0:
        h, w = x.shape[-2:]
        size = (max(8, round(h * view.scale)), max(8, round(w * view.scale)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0.0, 1.0)
    return jitter(x) if view.colour else x


def undo_view(maps: torch.Tensor, view: View, size: Sequence[int]) -> torch.Tensor:
    """Map priors computed on a view of the query back to the query's grid ``size``."""
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)
    return maps.flip(-1) if view.flip else maps


# --------------------------------------------------------------------------------------------------
# BAFT
# --------------------------------------------------------------------------------------------------
@dataclass
class LayerPriors:
    """BAFT output of one layer: ``priors [B, V, 2, h, w]`` (V cues, (fg, bg)), ``original [V]``:
    which cues are un-augmented supports (the rest are augmented views)."""

    priors: torch.Tensor
    original: torch.Tensor


@torch.no_grad()
def visual_priors(
    backbone: Backbone,
    layers: Sequence[str],
    query_image: torch.Tensor,
    support_images: torch.Tensor,
    support_fg: torch.Tensor | None,
    support_bg: torch.Tensor | None,
    views: Sequence[View],
    transform_name: str,
    affinity_tau: float | None,
    extra_layers: Sequence[str] = (),
) -> tuple[dict[str, LayerPriors], dict[str, torch.Tensor]]:
    """Priors of visual supports for every layer, and the query features (``layers`` + ``extra_layers``).

    ``query_image [B, 3, H, W]``; ``support_images [B, K, 3, H, W]``; ``support_fg``/``support_bg``
    ``[B, K, H, W]`` or ``None`` (kind ``image``: the whole image is the annotation, the background
    prior is ``1 - fg``). ``views``: the views of every support (the identity first); cues are
    ordered view-major. The query and all views of one image size go through the backbone in one call.
    """
    b, k = support_images.shape[:2]
    h, w = support_images.shape[-2:]
    names = list(dict.fromkeys([*layers, *extra_layers]))
    imgs = support_images.flatten(0, 1)
    fg = support_fg.flatten(0, 1) if support_fg is not None else imgs.new_ones(b * k, h, w)
    bg = support_bg.flatten(0, 1) if support_bg is not None else None
    # one backbone call per image size: [query?, view_1 supports, view_2 supports, ...]
    by_size: dict[tuple[int, int], list[int]] = {}
    view_imgs = [apply_view(imgs, v) for v in views]
    for i, x in enumerate(view_imgs):
        by_size.setdefault(tuple(x.shape[-2:]), []).append(i)
    view_feats: dict[int, dict[str, torch.Tensor]] = {}
    q_feats: dict[str, torch.Tensor] = {}
    qsize = tuple(query_image.shape[-2:])
    if qsize not in by_size:
        q_feats = backbone(query_image, names)
    for size, idx in by_size.items():
        parts = ([query_image] if size == qsize else []) + [view_imgs[i] for i in idx]
        feats = backbone(torch.cat(parts), list(layers) if size != qsize else names)
        off = b if size == qsize else 0
        if size == qsize:
            q_feats = {n: f[:b] for n, f in feats.items()}
        for j, i in enumerate(idx):
            view_feats[i] = {n: feats[n][off + j * b * k: off + (j + 1) * b * k] for n in layers}
    per_layer: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    for i, view in enumerate(views):
        vfg = fg.flip(-1) if view.flip else fg
        vbg = None if bg is None else (bg.flip(-1) if view.flip else bg)
        for n in layers:
            f = view_feats[i][n]
            protos = [masked_average(f, vfg).view(b, k, -1)]
            if vbg is not None:
                protos.append(masked_average(f, vbg).view(b, k, -1))
            sims = transform(q_feats[n], torch.cat(protos, dim=1), transform_name)  # [B, K or 2K, h, w]
            fg_p = sims[:, :k]
            bg_p = sims[:, k:] if vbg is not None else 1.0 - fg_p
            per_layer[n].append(torch.stack([fg_p, bg_p], dim=2))  # [B, K, 2, h, w]
    original = torch.tensor([i == 0 for i, _ in enumerate(views) for _ in range(k)])
    out: dict[str, LayerPriors] = {}
    for n in layers:
        pri = torch.cat(per_layer[n], dim=1)  # [B, V*K, 2, h, w]
        if affinity_tau is not None:
            bb, v = pri.shape[:2]
            pri = affinity_enhance(q_feats[n], pri.flatten(1, 2), affinity_tau).view(bb, v, 2, *pri.shape[-2:])
        out[n] = LayerPriors(pri, original)
    return out, q_feats


@torch.no_grad()
def text_prior_maps(backbone: Backbone, query_image: torch.Tensor, prompts: Sequence[str], transform_name: str) -> torch.Tensor:
    """T(dense image embedding, text embedding) of each episode's own prompt: ``[B, 1, h, w]``.

    Cosine uses the backbone's ``dense_text_similarity``; L1/L2 compare the same two L2-normalised
    embeddings (``dense_image_embedding``, ``encode_text``).
    """
    if not getattr(backbone, "has_text", False):
        raise UserError(f"diffup text supports need a backbone with a text tower; {backbone.name or 'this backbone'} has none")
    unique = list(dict.fromkeys(prompts))
    index = torch.tensor([unique.index(p) for p in prompts], device=query_image.device)
    metric, conv = parse_transform(transform_name)
    if metric == "cosine":
        sim = backbone.dense_text_similarity(query_image, unique).float()  # [B, N, h, w]
        d = (1.0 - sim.gather(1, index.view(-1, 1, 1, 1).expand(-1, 1, *sim.shape[-2:]))).clamp(0.0, MAX_DISTANCE)
        return convert(d, conv)
    dense = backbone.dense_image_embedding(query_image)
    text = backbone.encode_text(unique).to(dense.dtype)[index]  # [B, D]
    return convert(distance(dense, text[:, None], metric), conv)


@torch.no_grad()
def text_priors(
    backbone: Backbone,
    layers: Sequence[str],
    query_image: torch.Tensor,
    query_feats: dict[str, torch.Tensor],
    prompts: Sequence[str],
    views: Sequence[View],
    transform_name: str,
    affinity_tau: float | None,
) -> dict[str, LayerPriors]:
    """Text cues (zero-shot): the prompt's prior on each view of the *query* (the prompt is the
    support; its augmented views are views of the query, mapped back), resized to each layer's grid,
    background ``1 - fg``, affinity-enhanced with that layer's query affinity."""
    maps = [text_prior_maps(backbone, apply_view(query_image, v), prompts, transform_name) for v in views]
    out: dict[str, LayerPriors] = {}
    original = torch.tensor([i == 0 for i in range(len(views))])
    for n in layers:
        size = query_feats[n].shape[-2:]
        fg_p = torch.cat([undo_view(m, v, size) for m, v in zip(maps, views)], dim=1).clamp(0.0, 1.0)  # [B, V, h, w]
        pri = torch.stack([fg_p, 1.0 - fg_p], dim=2)
        if affinity_tau is not None:
            bb, v = pri.shape[:2]
            pri = affinity_enhance(query_feats[n], pri.flatten(1, 2), affinity_tau).view(bb, v, 2, *size)
        out[n] = LayerPriors(pri, original)
    return out
