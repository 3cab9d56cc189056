"""Center-pivot 4D convolution (HSNet, Min et al., ICCV 2021).

A 4D kernel over a correlation tensor ``[B, C, Ha, Wa, Hb, Wb]`` (query dims ``a``, support dims
``b``) is approximated by two 2D kernels that cross at the kernel's center: one slides over the query
dims at every support position, the other over the support dims at every query position; the two
results are summed. Spatial strides only ever reduce the *support* dims (HSNet's learner uses stride
``(1, 1, s, s)``), so the query-dim branch is evaluated on the support positions the strided
support-dim branch keeps (every ``s``-th one, starting at 0).

The two 2D convolutions are registered as ``conv1`` (query dims) and ``conv2`` (support dims), the
names of the authors' modules, so their checkpoints load without renaming.

Speed: once the learner has strided the support dims down to 1 x 1 (every 128-px input of the zoo),
the support-dim branch is a 3 x 3 kernel over a zero-padded single position, of which only the
centre tap sees data. oneDNN still runs the whole padded convolution over ``B x Ha x Wa`` tiny images,
which made these calls 60 % of an HSNet training step on the CPU; :func:`branch_conv` computes them
as the linear map of the centre tap instead (the same function; float rounding differs by ~1e-7;
``tests/test_hsnet.py``). At the paper's 400 px the support dims end at 2 x 2 and nothing changes.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def _four(v: int | Sequence[int]) -> tuple[int, int, int, int]:
    t = (v,) * 4 if isinstance(v, int) else tuple(int(x) for x in v)
    if len(t) != 4:
        raise ValueError(f"expected 4 values, got {v!r}")
    return t  # type: ignore[return-value]


def branch_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``; computed as a matrix product when ``x`` is a single position per image (the
    output is then one position too, and only the kernel tap at ``padding`` sees data)."""
    if isinstance(conv.padding, str):
        return conv(x)
    (ph, pw), (kh, kw), (sh, sw) = conv.padding, conv.kernel_size, conv.stride  # type: ignore[misc]
    single = (
        x.shape[-2:] == (1, 1) and ph < kh and pw < kw and conv.groups == 1 and conv.dilation == (1, 1) and conv.padding_mode == "zeros"
        and 0 <= 1 + 2 * ph - kh < sh and 0 <= 1 + 2 * pw - kw < sw  # one output position, and the tap is in the kernel
    )
    if not single:
        return conv(x)
    y = torch.nn.functional.linear(x.flatten(1), conv.weight[:, :, ph, pw], conv.bias)
    return y.view(x.shape[0], -1, 1, 1)


class CenterPivotConv4d(nn.Module):
    """4D convolution as the sum of two center-crossing 2D convolutions.

    ``kernel_size``, ``stride`` and ``padding`` are 4-tuples ordered ``(query_h, query_w, support_h,
    support_w)``. The query-dim stride must be 1 (the learner never strides the query dims).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.kernel_size = _four(kernel_size)
        self.stride = _four(stride)
        self.padding = _four(padding)
        if self.stride[:2] != (1, 1):
            raise ValueError("CenterPivotConv4d strides only the support dims; query stride must be (1, 1)")
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, self.kernel_size[:2], stride=self.stride[:2], padding=self.padding[:2], bias=bias
        )
        self.conv2 = nn.Conv2d(
            in_channels, out_channels, self.kernel_size[2:], stride=self.stride[2:], padding=self.padding[2:], bias=bias
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bsz, ch, ha, wa, hb, wb = x.shape
        sh, sw = self.stride[2:]

        # Query-dim branch, evaluated at the support positions that the strided branch keeps.
        pivots = x[..., ::sh, ::sw] if (sh > 1 or sw > 1) else x
        phb, pwb = pivots.shape[-2:]
        q = pivots.permute(0, 4, 5, 1, 2, 3).contiguous().view(bsz * phb * pwb, ch, ha, wa)
        q = branch_conv(self.conv1, q)
        outch, oha, owa = q.shape[-3:]
        q = q.view(bsz, phb, pwb, outch, oha, owa).permute(0, 3, 4, 5, 1, 2).contiguous()

        # Support-dim branch, at every query position.
        s = x.permute(0, 2, 3, 1, 4, 5).contiguous().view(bsz * ha * wa, ch, hb, wb)
        s = branch_conv(self.conv2, s)
        ohb, owb = s.shape[-2:]
        s = s.view(bsz, ha, wa, outch, ohb, owb).permute(0, 3, 1, 2, 4, 5).contiguous()

        if q.shape != s.shape:  # only with padding that does not preserve size; HSNet never does this
            raise ValueError(f"center-pivot branches disagree in shape: {tuple(q.shape)} vs {tuple(s.shape)}")
        return q + s

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
