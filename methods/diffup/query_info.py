"""Backbone-independent query information (DiffUp Sec. 3.3.3): Sobel and Canny edges, VAE features.

These are conditions of every U-Net level next to the priors. They depend on the query image only,
never on the backbone, so they do not break stitching.

* ``sobel``: gradient magnitude of the grey image (3x3 Sobel), divided by the image's largest
  value (contrast-free, in [0, 1]);
* ``canny``: scikit-image's Canny edges (sigma 1) of the grey image, as {0, 1};
* ``vae``: the 4 latent channels (mean of the posterior, times the VAE's scaling factor) of a local
  diffusers ``AutoencoderKL`` (``vae_path``: a ``save_pretrained`` folder; nothing is downloaded),
  the query encoded at 8x the prior resolution so the latent grid is the prior grid.

Edges are computed at input resolution and area-averaged to each level (an edge *density*).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fssbench.errors import UserError

QUERY_INFO = ("sobel", "canny", "vae")
VAE_CHANNELS = 4


def info_channels(names: Sequence[str]) -> int:
    return sum(VAE_CHANNELS if n == "vae" else 1 for n in names)


def grey(images: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` RGB in [0, 1] -> ``[B, 1, H, W]`` luma (ITU-R 601)."""
    w = torch.tensor([0.299, 0.587, 0.114], device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * w).sum(dim=1, keepdim=True)


def sobel(images: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of the grey image, each image divided by its maximum: ``[B, 1, H, W]``."""
    g = grey(images.float())
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=g.device)
    k = torch.stack([kx, kx.t()]).unsqueeze(1)  # [2, 1, 3, 3]
    gx_gy = F.conv2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), k)
    mag = gx_gy.pow(2).sum(dim=1, keepdim=True).sqrt()
    return mag / mag.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)


def canny(images: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """scikit-image Canny edges of the grey image: ``[B, 1, H, W]`` float {0, 1} (computed on the CPU)."""
    from skimage.feature import canny as sk_canny

    g = grey(images.detach().float()).cpu().numpy()[:, 0]
    edges = np.stack([sk_canny(x, sigma=sigma) for x in g]).astype(np.float32)
    return torch.from_numpy(edges)[:, None].to(images.device)


def load_vae(path: str | None) -> nn.Module:
    """A local diffusers ``AutoencoderKL`` (frozen); a missing folder is a one-line error."""
    if not path or not Path(path).is_dir() or not (Path(path) / "config.json").is_file():
        raise UserError(
            f"diffup query_info 'vae' needs a local diffusers AutoencoderKL folder (config.json + weights) "
            f"at vae_path; '{path}' is missing: save one with AutoencoderKL.save_pretrained(...) and point vae_path to it"
        )
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(path, local_files_only=True)
    vae.requires_grad_(False)
    return vae.eval()


@torch.no_grad()
def vae_features(vae: nn.Module, images: torch.Tensor, prior_size: int) -> torch.Tensor:
    """Latent mean ``[B, 4, R, R]``: the query at ``8 R`` px through the encoder, in [-1, 1] input range."""
    down = 2 ** (len(vae.config.block_out_channels) - 1)
    x = F.interpolate(images.float(), size=(prior_size * down,) * 2, mode="bilinear", align_corners=False, antialias=True)
    param = next(vae.parameters())
    lat = vae.encode((x * 2 - 1).to(param.dtype)).latent_dist.mean.float()
    lat = lat * float(getattr(vae.config, "scaling_factor", 1.0))
    if lat.shape[1] != VAE_CHANNELS:
        raise UserError(f"diffup vae_path: the VAE has {lat.shape[1]} latent channels; DiffUp reads {VAE_CHANNELS}")
    if tuple(lat.shape[-2:]) != (prior_size, prior_size):
        lat = F.interpolate(lat, size=(prior_size, prior_size), mode="bilinear", align_corners=False)
    return lat


@torch.no_grad()
def query_info(images: torch.Tensor, names: Sequence[str], prior_size: int, vae: nn.Module | None = None) -> torch.Tensor:
    """The query information at prior resolution ``[B, E, R, R]`` (channels in ``names`` order)."""
    out = []
    for n in names:
        if n == "sobel":
            m = sobel(images)
        elif n == "canny":
            m = canny(images)
        else:
            if vae is None:
                raise UserError("diffup query_info 'vae' is set but no VAE was loaded; set vae_path")
            out.append(vae_features(vae, images, prior_size))
            continue
        out.append(F.adaptive_avg_pool2d(m, (prior_size, prior_size)))
    if not out:
        return images.new_zeros(images.shape[0], 0, prior_size, prior_size)
    return torch.cat(out, dim=1).float()
