"""DQM: the dual-level quality modulation branch (DiffUp Sec. 3.3.3) and its training targets.

* error-map level: a conv block on (x_t, query image) predicts ``e^``, supervised by the true error
  ``e = x_0 - x_t`` (both in the [-1, 1] mask scale);
* IoU level: a regression branch on (x_t, query image, e^) predicts the IoU of the binarised
  ``x_t`` (``x_t > 0``) with the ground truth, supervised with an L2 loss.

Both heads also see the normalised step ``t / T`` as a constant channel: ``x_t`` alone does not say
how noisy it is. The predicted IoU is embedded like the time step (:func:`timestep_embedding` of
``IoU * (T - 1)``) and, with the resized ``e^`` as condition, drives a second SCM after every U-Net
block (``methods.diffup.unet``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[N, dim]`` of (possibly fractional) steps ``t [N]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def error_target(x0: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
    """The true error map ``x_0 - x_t``."""
    return x0 - xt


def iou_target(xt: torch.Tensor, x0: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """IoU ``[N]`` of ``x_t > 0`` with ``x_0 > 0`` over ``valid`` pixels (1 when both are empty)."""
    pred, gt = xt > 0, x0 > 0
    if valid is not None:
        v = valid > 0.5
        pred, gt = pred & v, gt & v
    inter = (pred & gt).flatten(1).sum(1).float()
    union = (pred | gt).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


class ErrorHead(nn.Module):
    """(x_t, image, t/T) -> e^ ``[N, 1, R, R]``."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(5, hidden, 3, padding=1), nn.SiLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.SiLU(),
            nn.Conv2d(hidden, 1, 3, padding=1),
        )

    def forward(self, xt: torch.Tensor, image: torch.Tensor, tfrac: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([xt, image, tfrac], dim=1))


class IoUHead(nn.Module):
    """(x_t, image, e^, t/T) -> predicted IoU ``[N]`` in (0, 1)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(6, hidden, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(hidden, 2 * hidden, 3, stride=2, padding=1), nn.SiLU(),
        )
        self.fc = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, xt: torch.Tensor, image: torch.Tensor, err: torch.Tensor, tfrac: torch.Tensor) -> torch.Tensor:
        h = self.conv(torch.cat([xt, image, err, tfrac], dim=1)).mean(dim=(2, 3))
        return torch.sigmoid(self.fc(h)).squeeze(1)


class DQM(nn.Module):
    """The quality heads; returns (e^, IoU^), IoU^ ``None`` without the IoU head (``iou=False``)."""

    def __init__(self, hidden: int, iou: bool = True) -> None:
        super().__init__()
        self.error = ErrorHead(hidden)
        self.iou = IoUHead(hidden) if iou else None

    def forward(self, xt: torch.Tensor, image: torch.Tensor, tfrac: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        err = self.error(xt, image, tfrac)
        return err, (self.iou(xt, image, err, tfrac) if self.iou is not None else None)
