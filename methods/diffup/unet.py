"""UQDD's denoiser: a U-Net (3 down, 1 middle, 3 up) with SCM and DQM (DiffUp Sec. 3.3.3).

Block layout at prior resolution ``R`` and width ``w`` (channels ``w, 2w, 4w``, middle ``4w``)::

    x_t -> conv -> enc1 (R) -> down -> enc2 (R/2) -> down -> enc3 (R/4) -> down -> mid (R/8)
        -> up + skip -> dec3 (R/4) -> up + skip -> dec2 (R/2) -> up + skip -> dec1 (R) -> out

Each block is a residual block (GroupNorm-SiLU-conv twice) followed by

1. **SCM** (self-conditioned modulation): the condition of the block's level concatenated with the
   resized ``x_t`` (self-conditioning: the noisy mask is itself a coarse mask) goes through a
   conv-SiLU-conv to a spatial scale and shift ``(g_s, b_s)`` of the block's shape; the time
   embedding through SiLU-linear to a per-channel ``(g_e, b_e)``; the block output ``h`` becomes
   ``IN(h) (1 + g_s + g_e) + b_s + b_e`` (AdaIN: instance normalisation, then the modulation);
2. the **DQM SCM**: the same module with the resized predicted error map as the condition and the
   embedding of the predicted IoU in place of the time embedding (Eqs. 18-20).

``quality`` ablates the DQM (the paper's Table 6): ``full`` (default) as above; ``no_iou`` drops the
IoU head and the IoU embedding (the DQM SCM keeps the error-map condition, with no embedding);
``no_err`` keeps both heads but gives the DQM SCM no error map (a zero condition); ``none`` drops the
DQM and its SCMs altogether (a U-Net with the prior SCMs only).

The last conv of every SCM is zero-initialised, so at initialisation each SCM is a plain instance
norm and training starts from an unconditioned U-Net. The condition channels are fixed by the
options (priors, query information), never by the backbone: the parameter count is the same for
every backbone unless ``lfe`` (a 1x1 projection of one backbone layer) is on.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from methods.diffup.dqm import DQM, timestep_embedding


def _groups(c: int) -> int:
    for g in (8, 4, 2, 1):
        if c % g == 0:
            return g
    return 1  # pragma: no cover


def area(x: torch.Tensor, size: int) -> torch.Tensor:
    """Area-resize a square map to ``size`` (avg-pool when it divides, else bilinear)."""
    s = x.shape[-1]
    if s == size:
        return x
    if s > size and s % size == 0:
        return F.avg_pool2d(x, s // size)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.GroupNorm(_groups(cin), cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1),
            nn.GroupNorm(_groups(cout), cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1),
        )
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) + self.skip(x)


class SCM(nn.Module):
    """Self-conditioned modulation (see the module doc)."""

    def __init__(self, channels: int, cond_channels: int, emb_dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.cond = nn.Sequential(
            nn.Conv2d(cond_channels + 1, hidden, 3, padding=1), nn.SiLU(), nn.Conv2d(hidden, 2 * channels, 3, padding=1)
        )
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * channels))
        for layer in (self.cond[-1], self.emb[-1]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, h: torch.Tensor, cond: torch.Tensor, xt: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """``cond`` and ``xt`` at ``h``'s resolution."""
        c = torch.cat([cond.to(h.dtype), xt.to(h.dtype)], dim=1)
        gs, bs = self.cond(c).chunk(2, dim=1)
        ge, be = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        return self.norm(h) * (1 + gs + ge) + bs + be


class Embedding(nn.Module):
    """Sinusoidal features -> MLP (time steps and predicted IoUs)."""

    def __init__(self, base: int, dim: int) -> None:
        super().__init__()
        self.base = base
        self.mlp = nn.Sequential(nn.Linear(base, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.base))


class UNet(nn.Module):
    """The denoiser. ``forward(x_t, t, conds, image)`` -> (model output, e^, IoU^).

    ``conds``: four level conditions ``[N, cond_channels, R/2^j, R/2^j]`` (j = 0..3, the last for the
    middle block); ``image``: the query image at ``R`` ``[N, 3, R, R]``; ``t``: ``[N]`` steps.
    """

    LEVEL_OF_BLOCK = (0, 1, 2, 3, 2, 1, 0)  # enc1, enc2, enc3, mid, dec3, dec2, dec1

    QUALITY = ("full", "no_iou", "no_err", "none")

    def __init__(
        self, width: int, cond_channels: int, timesteps: int, lfe_channels: int | None = None, quality: str = "full"
    ) -> None:
        super().__init__()
        if not isinstance(width, int) or width < 4 or width % 4:
            raise ValueError(f"width must be a multiple of 4, >= 4; got {width!r}")
        if quality not in self.QUALITY:
            raise ValueError(f"quality must be one of {', '.join(self.QUALITY)}; got {quality!r}")
        self.quality = quality
        c0, c1, c2 = width, 2 * width, 4 * width
        cm, emb = 4 * width, 4 * width
        self.timesteps = timesteps
        self.time = Embedding(width, emb)
        self.emb_dim = emb
        self.iou = Embedding(width, emb) if quality in ("full", "no_err") else None
        self.dqm = DQM(max(8, width), iou=quality != "no_iou") if quality != "none" else None
        self.inp = nn.Conv2d(1, c0, 3, padding=1)
        self.lfe = nn.Conv2d(lfe_channels, c0, 1) if lfe_channels else None
        chans = [(c0, c0), (c0, c1), (c1, c2), (c2, cm), (cm + c2, c2), (c2 + c1, c1), (c1 + c0, c0)]
        self.blocks = nn.ModuleList(ResBlock(a, b) for a, b in chans)
        self.scm = nn.ModuleList(SCM(b, cond_channels, emb, max(8, b // 2)) for _, b in chans)
        self.qscm = nn.ModuleList(SCM(b, 1, emb, max(8, b // 4)) for _, b in chans) if quality != "none" else None
        self.down = nn.ModuleList(nn.Conv2d(c, c, 3, stride=2, padding=1) for c in (c0, c1, c2))
        self.out = nn.Sequential(nn.GroupNorm(_groups(c0), c0), nn.SiLU(), nn.Conv2d(c0, 1, 3, padding=1))

    def forward(
        self,
        xt: torch.Tensor,
        t: torch.Tensor,
        conds: Sequence[torch.Tensor],
        image: torch.Tensor,
        lfe: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(model output, e^ or ``None``, IoU^ or ``None``): the heads ``quality`` keeps."""
        size = xt.shape[-1]
        tfrac = (t.float() / (self.timesteps - 1)).view(-1, 1, 1, 1).expand(-1, 1, size, size).to(xt.dtype)
        err = iou = None
        if self.dqm is not None:
            err, iou = self.dqm(xt, image.to(xt.dtype), tfrac)
        temb = self.time(t)
        if self.iou is not None and iou is not None:
            iemb = self.iou(iou.float() * (self.timesteps - 1))
        else:
            iemb = torch.zeros(xt.shape[0], self.emb_dim, device=xt.device, dtype=temb.dtype)
        qcond = err if (err is not None and self.quality != "no_err") else torch.zeros_like(xt)
        h = self.inp(xt)
        if self.lfe is not None:
            if lfe is None:
                raise ValueError("this U-Net was built with lfe and needs the low-level feature")
            h = h + F.interpolate(self.lfe(lfe.to(h.dtype)), size=(size, size), mode="bilinear", align_corners=False)
        xts, errs = [xt], [qcond]  # x_t and e^ at every level (self-conditioning inputs)
        for _ in range(3):
            xts.append(F.avg_pool2d(xts[-1], 2))
            errs.append(F.avg_pool2d(errs[-1], 2))
        skips: list[torch.Tensor] = []
        for i, (block, scm) in enumerate(zip(self.blocks, self.scm)):
            if i >= 4:
                h = torch.cat([F.interpolate(h, scale_factor=2.0, mode="nearest"), skips.pop()], dim=1)
            h = block(h)
            lvl = self.LEVEL_OF_BLOCK[i]
            h = scm(h, conds[lvl], xts[lvl], temb)
            if self.qscm is not None:
                h = self.qscm[i](h, errs[lvl], xts[lvl], iemb)
            if i < 3:
                skips.append(h)
                h = self.down[i](h)
        return self.out(h), err, iou


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
