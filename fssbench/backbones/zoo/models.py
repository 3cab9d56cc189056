"""Network definitions of the embedded zoo, and their ``Backbone`` wrappers.

Three families, all small enough to train on a laptop CPU in a couple of minutes:

* ``ZooResNet``: a CLIP-``ModifiedResNet``-shaped CNN (3-conv stem + avg-pool, bottleneck blocks
  with anti-aliased avg-pool downsampling) with **four stages** at strides 4/8/16/32, like RN50.
  Block features are taken *before the block's final ReLU* (HSNet's ``extract_feat_res``).
* ``ZooViT``: a small pre-norm ViT (patch 8, class token, learned positional embedding that is
  bicubically interpolated for other input sizes). Every block has stride 8 (the patch size);
  blocks are grouped into stages of ``blocks_per_stage`` consecutive blocks (8 blocks -> 4 stages
  of 2, so ``stages`` gives the outputs of blocks 2, 4, 6, 8).
* ``ZooCLIP``: a CLIP-style two-tower model: a ``ZooResNet`` trunk + CLIP attention pool (image),
  and open_clip's ``TextTransformer`` (text) over a small word-level tokenizer whose vocabulary is
  stored in the checkpoint config.
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fssbench.backbones.base import Backbone, LayerSpec

# --------------------------------------------------------------------------- ResNet


class Bottleneck(nn.Module):
    """CLIP ModifiedResNet bottleneck; ``forward`` returns the output *before* the final ReLU."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample: nn.Module | None = None
        if stride > 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.AvgPool2d(stride) if stride > 1 else nn.Identity(),
                nn.Conv2d(inplanes, out, 1, bias=False),
                nn.BatchNorm2d(out),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(self.avgpool(y)))
        identity = x if self.downsample is None else self.downsample(x)
        return y + identity  # pre-ReLU block feature


class ZooResNet(nn.Module):
    """Stem (stride 4) + four stages of bottlenecks (strides 4, 8, 16, 32)."""

    def __init__(self, width: int = 16, layers: Sequence[int] = (1, 1, 1, 1)) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError("ZooResNet needs four stages")
        half = max(width // 2, 8)
        self.conv1 = nn.Conv2d(3, half, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        inplanes = width
        self.stage_names = ["layer1", "layer2", "layer3", "layer4"]
        self.specs: list[LayerSpec] = []
        for i, n in enumerate(layers):
            planes = width * (2**i)
            blocks = []
            for j in range(n):
                blocks.append(Bottleneck(inplanes, planes, stride=(2 if (i > 0 and j == 0) else 1)))
                inplanes = planes * Bottleneck.expansion
                self.specs.append(LayerSpec(f"layer{i + 1}.{j}", inplanes, 4 * 2**i, i + 1))
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.out_channels = inplanes
        for m in self.modules():
            if isinstance(m, Bottleneck):  # zero-init the last BN so every block starts as identity
                nn.init.zeros_(m.bn3.weight)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        return self.avgpool(x)

    def forward_features(
        self, x: torch.Tensor, names: Sequence[str] = (), stop: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Returns (final post-ReLU map, requested pre-ReLU block features). With ``stop``, stops
        after the last requested block (the returned map is then that block's post-ReLU output)."""
        wanted = set(names)
        last = max((i for i, s in enumerate(self.specs) if s.name in wanted), default=len(self.specs) - 1)
        feats: dict[str, torch.Tensor] = {}
        x = self.stem(x)
        k = 0
        for stage in self.stage_names:
            for j, block in enumerate(getattr(self, stage)):
                pre = block(x)
                name = f"{stage}.{j}"
                if name in wanted:
                    feats[name] = pre
                x = F.relu(pre)
                if stop and k == last:
                    return x, feats
                k += 1
        return x, feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


class ZooResNetClassifier(nn.Module):
    """Supervised pretraining model: trunk + global-average-pool linear classifier; with
    ``aux_seg`` also a per-pixel head (1x1 conv on stage-3 and upsampled stage-4 features)
    predicting background / pretraining class from the render masks (off in the shipped zoo)."""

    def __init__(self, num_classes: int, width: int, layers: Sequence[int], aux_seg: bool = True) -> None:
        super().__init__()
        self.trunk = ZooResNet(width, layers)
        self.fc = nn.Linear(self.trunk.out_channels, num_classes)
        c3 = self.trunk.specs[[s.stage for s in self.trunk.specs].index(3)].channels
        self.seg = nn.Conv2d(c3 + self.trunk.out_channels, num_classes + 1, 1) if aux_seg else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        l3 = [s.name for s in self.trunk.specs if s.stage == 3][-1]
        out, feats = self.trunk.forward_features(x, [l3])
        logits = self.fc(out.mean(dim=(2, 3)))
        seg = None
        if self.seg is not None:
            f3 = F.relu(feats[l3])
            f4 = F.interpolate(out, size=f3.shape[-2:], mode="bilinear", align_corners=False)
            seg = self.seg(torch.cat([f3, f4], 1))
        return logits, seg


# --------------------------------------------------------------------------- ViT


def _interp_pos(pos: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
    """Bicubically resize a square ``[N, C]`` grid of positional embeddings to ``[gh*gw, C]``."""
    n = pos.shape[0]
    g = int(round(math.sqrt(n)))
    if g * g != n:
        raise ValueError("positional grid must be square")
    if (gh, gw) == (g, g):
        return pos
    p = pos.reshape(1, g, g, -1).permute(0, 3, 1, 2)
    p = F.interpolate(p, size=(gh, gw), mode="bicubic", align_corners=False)
    return p.permute(0, 2, 3, 1).reshape(gh * gw, -1)


class ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, c))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ZooViT(nn.Module):
    def __init__(
        self,
        num_classes: int,
        image_size: int = 64,
        patch: int = 8,
        dim: int = 96,
        depth: int = 8,
        heads: int = 3,
        blocks_per_stage: int = 2,
    ) -> None:
        super().__init__()
        self.patch = patch
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        grid = image_size // patch
        self.pos_embed = nn.Parameter(torch.randn(grid * grid + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(ViTBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.specs = [LayerSpec(f"blocks.{i}", dim, patch, i // blocks_per_stage + 1) for i in range(depth)]
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.patch_embed(x)
        b, c, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2)
        pos = torch.cat([self.pos_embed[:1], _interp_pos(self.pos_embed[1:], gh, gw)], 0)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], 1) + pos
        return x, gh, gw

    def forward_features(
        self, x: torch.Tensor, names: Sequence[str] = (), stop: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        wanted = set(names)
        last = max((i for i, s in enumerate(self.specs) if s.name in wanted), default=len(self.specs) - 1)
        x, gh, gw = self.tokens(x)
        feats: dict[str, torch.Tensor] = {}
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            name = f"blocks.{i}"
            if name in wanted:
                feats[name] = x[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, gh, gw)
            if stop and i == last:
                break
        return x, feats

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, _ = self.forward_features(x)
        return self.head(self.norm(x[:, 0])), None


# --------------------------------------------------------------------------- CLIP


class WordTokenizer:
    """Word-level tokenizer over a fixed vocabulary (stored with the checkpoint).

    ids: 0 = pad, 1 = unknown word, 2.. = vocabulary words, ``len(vocab)+2`` = start,
    ``len(vocab)+3`` = end (the highest id, so open_clip's ``argmax`` pooling finds it).
    """

    def __init__(self, vocab: Sequence[str], context_length: int) -> None:
        self.vocab = list(vocab)
        self.index = {w: i + 2 for i, w in enumerate(self.vocab)}
        self.sot = len(self.vocab) + 2
        self.eot = len(self.vocab) + 3
        self.vocab_size = len(self.vocab) + 4
        self.context_length = context_length

    @staticmethod
    def words(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", text.lower())

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [self.index.get(w, 1) for w in self.words(t)][: self.context_length - 2]
            ids = [self.sot, *ids, self.eot]
            out[i, : len(ids)] = torch.tensor(ids)
        return out


class AttnPool(nn.Module):
    """CLIP's ``AttentionPool2d`` with positional embeddings interpolated to any grid size."""

    def __init__(self, grid: int, embed_dim: int, heads: int, output_dim: int) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(grid * grid + 1, embed_dim) / embed_dim**0.5)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.heads = heads

    def _pos(self, h: int, w: int) -> torch.Tensor:
        pe = self.positional_embedding
        return torch.cat([pe[:1], _interp_pos(pe[1:], h, w)], 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)  # B, HW, C
        t = torch.cat([t.mean(1, keepdim=True), t], 1) + self._pos(h, w)
        d = c // self.heads
        q = self.q_proj(t[:, :1]).reshape(b, 1, self.heads, d).transpose(1, 2)
        k = self.k_proj(t).reshape(b, -1, self.heads, d).transpose(1, 2)
        v = self.v_proj(t).reshape(b, -1, self.heads, d).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, c)
        return self.c_proj(a)

    def dense(self, x: torch.Tensor) -> torch.Tensor:
        """Value path per location (MaskCLIP, as ``clip.py`` does for OpenAI's ResNets):
        ``c_proj(v_proj(x))`` on every spatial token, no positional embedding -> ``[B, D, h, w]``."""
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        y = self.c_proj(self.v_proj(t))
        return y.transpose(1, 2).reshape(b, -1, h, w)


class ZooCLIP(nn.Module):
    def __init__(
        self,
        vocab: Sequence[str],
        width: int = 16,
        layers: Sequence[int] = (1, 1, 1, 1),
        image_size: int = 64,
        embed_dim: int = 128,
        pool_heads: int | None = None,
        context_length: int = 12,
        text_width: int = 128,
        text_heads: int = 4,
        text_layers: int = 3,
    ) -> None:
        super().__init__()
        from open_clip.transformer import TextTransformer

        self.trunk = ZooResNet(width, layers)
        self.attnpool = AttnPool(image_size // 32, self.trunk.out_channels, pool_heads or self.trunk.out_channels // 64, embed_dim)
        self.tokenizer = WordTokenizer(vocab, context_length)
        self.text = TextTransformer(
            context_length=context_length,
            vocab_size=self.tokenizer.vocab_size,
            width=text_width,
            heads=text_heads,
            layers=text_layers,
            output_dim=embed_dim,
            pool_type="argmax",
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.attnpool(self.trunk(x)), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(tokens), dim=-1)


# --------------------------------------------------------------------------- Backbone wrappers


class ZooBackbone(Backbone):
    """A zoo network behind the ``Backbone`` interface (frozen, eval mode)."""

    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)

    def __init__(self, name: str, net: nn.Module, trunk: nn.Module, arch: str, pretraining: str, meta: dict[str, Any]) -> None:
        super().__init__()
        self.name = name
        self.arch = arch
        self.pretraining = pretraining
        self.meta = dict(meta)
        self.net = net
        self._trunk = [trunk]  # not a second registration of the same module
        self._layers = list(trunk.specs)
        self.freeze()

    def _extract(self, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        _, feats = self._trunk[0].forward_features(x, names, stop=True)
        return {n: feats[n] for n in names}

    @property
    def has_text(self) -> bool:
        return isinstance(self.net, ZooCLIP)

    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        if not isinstance(self.net, ZooCLIP):
            return super().encode_text(prompts)
        device = next(self.parameters()).device
        return self.net.encode_text(self.net.tokenizer(list(prompts)).to(device))

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Global L2-normalised image embeddings ``[B, D]`` (CLIP model only)."""
        if not isinstance(self.net, ZooCLIP):
            raise NotImplementedError(f"{self.name} has no text tower")
        return self.net.encode_image(self.normalize(images))

    @torch.no_grad()
    def dense_image_embedding(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(self.net, ZooCLIP):
            return super().dense_image_embedding(images)
        x = self.net.trunk(self.normalize(images))
        return F.normalize(self.net.attnpool.dense(x), dim=1)
