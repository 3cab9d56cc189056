"""UAPF: uncertainty-aware prior fusion (DiffUp Sec. 3.3.2), parameter-free, and the level rule.

The level rule (which backbone layers condition which U-Net level)
-------------------------------------------------------------------
The decoder has ``LEVELS = 4`` resolutions: the three encoder/decoder levels (``R``, ``R/2``,
``R/4`` for prior resolution ``R``) and the middle block (``R/8``). The selected backbone layers
(in forward order) are split into ``GROUPS = 3`` groups, shallow to deep; group 1 conditions level 1
(``R``, its encoder and decoder blocks), group 2 level 2, group 3 level 3 *and* the middle block.
Each group's priors are the mean over its layers (each resized to the level's grid), so a level
always receives the same channels whatever the depth, width or strides of the backbone.

* ``stage`` (default): when the selected layers span exactly three stages, one group per stage
  (RN50 layer2..4: 4 / 6 / 3 blocks; RN101: 4 / 23 / 3; ViT-B/16 blocks 3..11: 3 / 3 / 3; the
  zoo's: its last three stages); otherwise the ``depth`` rule.
* ``depth``: layer ``i`` of ``n`` goes to group ``floor(3 (i + 1/2) / n)``, i.e. by relative
  depth (RN50's 13 blocks: 4 / 5 / 4; a ViT-B/16's 12 blocks: 4 / 4 / 4). With fewer than three
  layers a layer serves several groups (group ``g`` takes the layer at relative depth ``(g+1/2)/3``).

Fusion
------
Over the ``V`` cues of an episode (its k supports, and at k = 1 their augmented views, or the text
prompt's views), per level and for fg and bg separately: the mean prior, its variance (fed to the
decoder as a standard deviation, the same information on a better-scaled axis), and ``selected``
whole cue priors: the cues closest to the mean (mean absolute difference over all levels),
repeated cyclically when there are fewer cues than ``selected``. All three are symmetric in the
supports, so the supports' order never matters, and one pass serves any k.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from fssbench.backbones.base import LayerSpec
from fssbench.errors import UserError
from methods.diffup.baft import LayerPriors

GROUPS = 3
LEVELS = 4
LEVEL_RULES = ("stage", "depth")


def level_sizes(prior_size: int) -> list[int]:
    """Grid side of each U-Net level: ``R, R/2, R/4, R/8``."""
    if prior_size % 8 or prior_size < 16:
        raise UserError(f"diffup prior_size must be a multiple of 8 and at least 16, got {prior_size}")
    return [prior_size // 2**j for j in range(LEVELS)]


def level_group(level: int) -> int:
    """The layer group that conditions U-Net level ``level`` (0-based; the middle block is level 3)."""
    return min(level, GROUPS - 1)


def select_layers(specs: Sequence[LayerSpec], layers: object = "auto") -> list[LayerSpec]:
    """``auto``: the blocks of the last three stages (every block with <= 3 stages); ``all``: every
    block; or a list of layer names (kept in forward order)."""
    specs = list(specs)
    if layers == "all":
        return specs
    if layers == "auto":
        stages = sorted({s.stage for s in specs})
        keep = set(stages[-GROUPS:])
        return [s for s in specs if s.stage in keep]
    if isinstance(layers, (list, tuple)) and layers and all(isinstance(n, str) for n in layers):
        known = {s.name: s for s in specs}
        bad = [n for n in layers if n not in known]
        if bad:
            raise UserError(f"diffup option layers: {', '.join(map(repr, bad))} not in the backbone (layers: {', '.join(known)})")
        wanted = set(layers)
        return [s for s in specs if s.name in wanted]
    raise UserError(f"diffup option layers must be 'auto', 'all' or a list of layer names, got {layers!r}")


def layer_groups(specs: Sequence[LayerSpec], rule: str = "stage") -> list[list[str]]:
    """The three groups of layer names (shallow to deep) by ``rule`` (see the module doc)."""
    specs = list(specs)
    if rule not in LEVEL_RULES:
        raise UserError(f"diffup option level_rule must be one of {', '.join(LEVEL_RULES)}, got {rule!r}")
    if not specs:
        raise UserError("diffup needs at least one backbone layer")
    stages = sorted({s.stage for s in specs})
    if rule == "stage" and len(stages) == GROUPS:
        return [[s.name for s in specs if s.stage == st] for st in stages]
    n = len(specs)
    if n < GROUPS:
        return [[specs[min(n - 1, int(n * (g + 0.5) / GROUPS))].name] for g in range(GROUPS)]
    groups: list[list[str]] = [[] for _ in range(GROUPS)]
    for i, s in enumerate(specs):
        groups[min(GROUPS - 1, int(GROUPS * (i + 0.5) / n))].append(s.name)
    return groups


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


@dataclass
class Fused:
    """UAPF output. ``levels[j]``: ``[B, 4 + 2M, s_j, s_j]`` = (mean fg, mean bg, std fg, std bg,
    M selected (fg, bg) pairs); ``prob``: the fused foreground probability ``[B, 1, R, R]``."""

    levels: list[torch.Tensor]
    prob: torch.Tensor


def prior_channels(selected: int) -> int:
    return 4 + 2 * selected


def minmax(x: torch.Tensor) -> torch.Tensor:
    """Per-map min-max normalisation of ``[..., h, w]`` to [0, 1] (a constant map becomes 0.5)."""
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    rng = hi - lo
    return torch.where(rng > 1e-6, (x - lo) / rng.clamp_min(1e-6), torch.full_like(x, 0.5))


def standardise(x: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Per-map standardisation of ``[..., h, w]`` to zero mean and unit standard deviation (a
    constant map becomes 0). Why: backbones differ in how far their priors spread around their own
    level (a CNN's cosine priors sit in a narrow band, a ViT's wider); standardised maps give the
    decoder the *shape* of each prior on one scale, whatever the backbone."""
    mu = x.mean(dim=(-2, -1), keepdim=True)
    sd = x.var(dim=(-2, -1), keepdim=True, unbiased=False).sqrt()
    return (x - mu) / sd.clamp_min(eps)


PRIOR_NORMS = ("none", "minmax", "standard")


@torch.no_grad()
def fuse(
    layer_priors: dict[str, LayerPriors],
    groups: Sequence[Sequence[str]],
    prior_size: int,
    selected: int,
    norm: str = "none",
) -> Fused:
    """Mean / variance / selected priors per U-Net level; see the module doc."""
    sizes = level_sizes(prior_size)
    group_maps: list[list[torch.Tensor]] = [[] for _ in sizes]  # per level: [B, V, 2, s, s]
    for j, s in enumerate(sizes):
        names = groups[level_group(j)]
        acc = None
        for n in names:
            p = layer_priors[n].priors.float()
            b, v = p.shape[:2]
            r = _resize(p.flatten(1, 2), s).view(b, v, 2, s, s)
            acc = r if acc is None else acc + r
        group_maps[j] = acc / len(names)
    if norm not in PRIOR_NORMS:
        raise UserError(f"diffup option prior_norm must be one of {', '.join(PRIOR_NORMS)}, got {norm!r}")
    # the fused probability (the offset process's drift target and the "prior" output) comes from
    # the raw maps under "standard", so that only the decoder's condition channels change
    raw_means = [m.mean(dim=1) for m in group_maps]
    if norm == "minmax":
        group_maps = [minmax(m) for m in group_maps]
    elif norm == "standard":
        group_maps = [standardise(m) for m in group_maps]
    means = [m.mean(dim=1) for m in group_maps]  # [B, 2, s, s]
    stds = [m.var(dim=1, unbiased=False).clamp_min(0).sqrt() for m in group_maps]
    # selection: the cues nearest the mean over every level (ties: lower index first)
    dev = sum((m - mu[:, None]).abs().mean(dim=(2, 3, 4)) for m, mu in zip(group_maps, means))  # [B, V]
    v = dev.shape[1]
    order = torch.argsort(dev + 1e-9 * torch.arange(v, device=dev.device), dim=1)  # [B, V]
    pick = order[:, torch.arange(selected, device=dev.device) % v]  # [B, M]
    levels = []
    for m, mu, sd in zip(group_maps, means, stds):
        idx = pick[:, :, None, None, None].expand(-1, -1, *m.shape[2:])
        sel = m.gather(1, idx).flatten(1, 2)  # [B, 2M, s, s]
        levels.append(torch.cat([mu, sd, sel], dim=1))
    # fused foreground probability: per level fg / (fg + bg), averaged over levels 0..2 at R
    prob_means = raw_means if norm == "standard" else means
    probs = [_resize(mu[:, :1] / (mu[:, :1] + mu[:, 1:2]).clamp_min(1e-6), sizes[0]) for mu in prob_means[:GROUPS]]
    prob = (sum(probs) / len(probs)).clamp(0.0, 1.0)
    return Fused(levels=levels, prob=prob)
