"""HED soft-edge detector: the network of ControlNet's annotator (the Apache-2.0 HED variant).

Architecture (our implementation of the published layout, so that its state dict loads): a learned
input offset ``norm`` ``[1, 3, 1, 1]`` subtracted from the RGB image in [0, 255]; five VGG-style
blocks of 2 / 2 / 3 / 3 / 3 convolutions (64 / 128 / 256 / 512 / 512 channels, ReLU), each after the
first preceded by 2 x 2 max pooling; a 1 x 1 side projection to one channel after each block. The
five side maps are resized to the input size, averaged and passed through a sigmoid.

Weights: ``ControlNetHED.pth`` (lllyasviel/Annotators on the Hugging Face hub), put at
``<weights dir>/annotators/ControlNetHED.pth``; read with ``weights_only=True``. Without the file,
the suite's ``hed`` / ``scribble`` conditions use the classical substitute
(:func:`fssbench.auxiliary.conditions.sobel_soft_edges`) and say so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fssbench.backbones.weights import read_torch_file
from fssbench.errors import UserError

HED_FILE = "annotators/ControlNetHED.pth"
HED_SOURCE = "https://huggingface.co/lllyasviel/Annotators (ControlNetHED.pth)"
HED_NAME = "hed (ControlNetHED, Apache-2.0 variant)"


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, n: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(*[nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1) for i in range(n)])
        self.projection = nn.Conv2d(c_out, 1, 1)

    def forward(self, x: torch.Tensor, pool: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if pool:
            x = F.max_pool2d(x, 2, 2)
        for conv in self.convs:
            x = F.relu(conv(x))
        return x, self.projection(x)


class HEDNet(nn.Module):
    """The HED network; ``forward`` takes ``[B, 3, H, W]`` RGB in [0, 255], returns edges in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))
        spec = [(3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3)]
        for i, (a, b, n) in enumerate(spec, start=1):
            self.add_module(f"block{i}", _Block(a, b, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x - self.norm
        sides = []
        for i in range(1, 6):
            h, p = getattr(self, f"block{i}")(h, pool=i > 1)
            sides.append(F.interpolate(p, size=x.shape[-2:], mode="bilinear", align_corners=False))
        return torch.sigmoid(torch.cat(sides, dim=1).mean(dim=1, keepdim=True))


class HEDDetector:
    """``H x W x 3 uint8 -> H x W float32`` soft edges with a loaded :class:`HEDNet`."""

    name = HED_NAME

    def __init__(self, net: HEDNet, device: torch.device | str = "cpu") -> None:
        self.net = net.eval().to(device)
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().to(self.device)
        return self.net(x)[0, 0].clamp(0, 1).cpu().numpy().astype(np.float32)


def load_hed(path: str | Path, device: torch.device | str = "cpu") -> HEDDetector:
    """Read ``ControlNetHED.pth`` into :class:`HEDNet` (strict keys and shapes)."""
    p = Path(path)
    state = read_torch_file(p, what="HED weights", fix=f"re-download {HED_SOURCE}")
    net = HEDNet()
    try:
        net.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"HED weights {p} do not match the ControlNetHED network ({first}); use {HED_SOURCE}") from None
    return HEDDetector(net, device)


def find_hed(weights_dir: Path | None) -> Path | None:
    """``<weights dir>/annotators/ControlNetHED.pth`` when it exists."""
    if weights_dir is None:
        return None
    p = Path(weights_dir) / HED_FILE
    return p if p.is_file() else None
