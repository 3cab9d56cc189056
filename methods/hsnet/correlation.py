"""Multi-layer cosine correlations (HSNet's hypercorrelation pyramid).

For each selected layer, every query position is compared with every support position by cosine
similarity; negative similarities are clamped to 0. Correlations of the layers of one pyramid level
(one backbone stage) are stacked as channels, giving ``[B, n_layers, Hq, Wq, Hs, Ws]`` per level.
"""

from __future__ import annotations

from typing import Sequence

import torch

EPS = 1e-5
"""Added to the L2 norm before dividing (the authors' value)."""


def cosine_correlation(query_feat: torch.Tensor, support_feat: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Clamped cosine similarity ``[B, Hq, Wq, Hs, Ws]`` between two feature maps ``[B, C, H, W]``."""
    bsz, ch, hb, wb = support_feat.shape
    s = support_feat.reshape(bsz, ch, hb * wb)
    s = s / (s.norm(dim=1, p=2, keepdim=True) + eps)
    _, _, ha, wa = query_feat.shape
    q = query_feat.reshape(bsz, ch, ha * wa)
    q = q / (q.norm(dim=1, p=2, keepdim=True) + eps)
    corr = torch.bmm(q.transpose(1, 2), s).view(bsz, ha, wa, hb, wb)
    return corr.clamp(min=0)


def hypercorrelation_pyramid(
    query_groups: Sequence[Sequence[torch.Tensor]],
    support_groups: Sequence[Sequence[torch.Tensor]],
    eps: float = EPS,
) -> list[torch.Tensor]:
    """Correlation pyramid, **deepest level first** (the order HSNet's learner consumes).

    ``query_groups`` / ``support_groups``: per pyramid level, shallow to deep, the list of feature
    maps of that level's layers (forward order). Returns one ``[B, n_layers, Hq, Wq, Hs, Ws]`` tensor
    per level, deepest first.
    """
    if len(query_groups) != len(support_groups):
        raise ValueError("query and support feature groups differ in length")
    levels = []
    for q_feats, s_feats in zip(query_groups, support_groups):
        corrs = [cosine_correlation(q, s, eps) for q, s in zip(q_feats, s_feats, strict=True)]
        levels.append(torch.stack(corrs).transpose(0, 1).contiguous())
    return levels[::-1]
