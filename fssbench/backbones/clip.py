"""OpenAI CLIP backbones through open_clip: ``clip-rn50``, ``clip-rn101``, ``clip-vit-b16``.

Image features (``forward``)
    ModifiedResNet (RN50 / RN101): every bottleneck, ``layer<s>.<i>``, taken *before* the block's
    final ReLU (as HSNet does for torchvision ResNets). CLIP's stem is three 3x3 convs (the first
    with stride 2) followed by a 2x2 average pool, and its stride-2 blocks downsample with an average
    pool after conv2 (and before the 1x1 shortcut conv); strides are 4/8/16/32 and channels
    256/512/1024/2048 as in a torchvision ResNet-50/101.

    ViT-B/16: the 12 transformer blocks' output tokens without the class token, reshaped to
    ``[B, 768, H/16, W/16]``, named ``blocks.0`` .. ``blocks.11``. Stage grouping (ViTs have no
    stages): **4 stages of 3 blocks** -- blocks 0-2 -> stage 1, 3-5 -> 2, 6-8 -> 3, 9-11 -> 4 -- so
    ``stages`` are blocks 2, 5, 8, 11 (DPT's readout layers for ViT-B) and HSNet-style methods that
    correlate the last three stages use blocks 3..11 in three groups of three. All strides are 16.

Text and dense image-text features
    ``encode_text``: open_clip's tokenizer (77 tokens) + CLIP's text transformer, L2-normalised.
    ``dense_image_embedding`` (L2-normalised ``[B, D, h, w]``):
      * ModifiedResNet, MaskCLIP-style: the value path of the attention pool applied to every
        spatial token of the final (post-ReLU) layer4 map, ``c_proj(v_proj(x))``, without the
        positional embedding and without query-key attention; stride 32.
      * ViT: the final block's patch tokens through ``ln_post`` and ``proj``; stride 16.
    ``encode_image``: the regular global CLIP embedding (attention pool / class token).

Input sizes other than 224
    The ViT positional embedding and the attention-pool positional embedding (used only by
    ``encode_image``) are resized bicubically (antialiased, like open_clip's ``resize_pos_embed``)
    from their 14x14 / 7x7 grids to the input's grid; at 224x224 they are used unchanged, so the
    outputs equal open_clip's. Use sizes divisible by 32 (RN) / 16 (ViT).

Normalisation: OpenAI CLIP mean/std. Weights (never downloaded): OpenAI's ``RN50.pt``,
``RN101.pt``, ``ViT-B-16.pt`` (TorchScript archives, fp16 -- loaded via ``torch.jit.load`` on the
CPU, cast to fp32; a plain state dict under the same name also works) in the weights directory or
open_clip's cache ``~/.cache/clip``; or open_clip's Hugging Face files (``open_clip_model.safetensors``
/ ``open_clip_pytorch_model.bin``) in the HF hub cache (``timm/resnet50_clip.openai``,
``timm/resnet101_clip.openai``, ``timm/vit_base_patch16_clip_224.openai``) or in
``<weights_dir>/<backbone-name>/``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fssbench.backbones.base import Backbone, LayerSpec
from fssbench.backbones.registry import register_backbone
from fssbench.backbones.resnet import run_resnet_stages, resnet_layer_specs, static_resnet_specs
from fssbench.backbones.weights import WeightsSpec, load_state_dict_file, load_weights_into

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")  # metadata in OpenAI's archives
VIT_NUM_STAGES = 4

__all__ = [
    "ClipBackbone",
    "build_open_clip_model",
    "interpolate_pos_grid",
    "vit_stage",
]


def vit_stage(index: int, depth: int, num_stages: int = VIT_NUM_STAGES) -> int:
    """1-based stage of transformer block ``index`` (0-based) when ``depth`` blocks form ``num_stages`` groups."""
    return index * num_stages // depth + 1


def interpolate_pos_grid(grid: torch.Tensor, old_hw: tuple[int, int], new_hw: tuple[int, int]) -> torch.Tensor:
    """Resize a ``[h*w, C]`` grid of positional embeddings to ``new_hw`` (bicubic, antialiased)."""
    if tuple(old_hw) == tuple(new_hw):
        return grid
    c = grid.shape[-1]
    g = grid.reshape(1, old_hw[0], old_hw[1], c).permute(0, 3, 1, 2).float()
    g = F.interpolate(g, size=tuple(new_hw), mode="bicubic", align_corners=False, antialias=True)
    return g.permute(0, 2, 3, 1).reshape(new_hw[0] * new_hw[1], c).to(grid.dtype)


def build_open_clip_model(model_name: str, quick_gelu: bool = True) -> nn.Module:
    """A randomly initialised open_clip ``CLIP`` from a built-in config (no weights, no network)."""
    import open_clip
    from open_clip.model import CLIP

    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise ValueError(f"open_clip has no model config {model_name!r}")
    cfg = dict(cfg)
    cfg.pop("quick_gelu", None)
    cfg.pop("custom_text", None)
    return CLIP(**cfg, quick_gelu=quick_gelu)


class ClipBackbone(Backbone):
    """An open_clip ``CLIP`` (ModifiedResNet or ViT image tower) behind the Backbone interface."""

    mean = OPENAI_MEAN
    std = OPENAI_STD

    def __init__(
        self,
        model: nn.Module,
        name: str = "",
        pretraining: str = "clip",
        tokenizer: Callable[[list[str]], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.pretraining = pretraining
        self._tokenizer = tokenizer
        visual = model.visual
        self.is_vit = hasattr(visual, "class_embedding") and hasattr(visual, "transformer")
        self.arch = "vit" if self.is_vit else "cnn"
        self.embed_dim = int(
            model.text_projection.shape[1] if isinstance(model.text_projection, torch.Tensor) else visual.output_dim
        )
        if self.is_vit:
            if getattr(visual, "attn_pool", None) is not None:
                raise ValueError("ViT towers with attentional pooling are not supported")
            blocks = visual.transformer.resblocks
            width = int(visual.transformer.width)
            patch = int(visual.patch_size[0])
            self._layers = [
                LayerSpec(f"blocks.{i}", width, patch, vit_stage(i, len(blocks))) for i in range(len(blocks))
            ]
            self.dense_stride = patch
        else:
            self._layers = resnet_layer_specs(self._stages(), stem_stride=4)
            self.dense_stride = 32

    # --- description -------------------------------------------------------
    @property
    def has_text(self) -> bool:
        return True

    @property
    def visual(self) -> nn.Module:
        return self.model.visual

    def _stages(self) -> list[nn.Sequential]:
        v = self.model.visual
        return [v.layer1, v.layer2, v.layer3, v.layer4]

    # --- ModifiedResNet ------------------------------------------------------
    def _rn_stem(self, x: torch.Tensor) -> torch.Tensor:
        v = self.model.visual
        x = F.relu(v.bn1(v.conv1(x)))
        x = F.relu(v.bn2(v.conv2(x)))
        x = F.relu(v.bn3(v.conv3(x)))
        return v.avgpool(x)

    def _rn_final_map(self, x: torch.Tensor) -> torch.Tensor:
        """Post-ReLU layer4 output (what the attention pool consumes)."""
        x = self._rn_stem(x)
        for stage in self._stages():
            x = stage(x)
        return x

    def _rn_attnpool(self, x: torch.Tensor) -> torch.Tensor:
        """open_clip's AttentionPool2d with its positional embedding resized to the map's grid."""
        ap = self.model.visual.attnpool
        b, c, h, w = x.shape
        tokens = x.flatten(2).permute(2, 0, 1)  # (hw, B, C)
        tokens = torch.cat([tokens.mean(dim=0, keepdim=True), tokens], dim=0)
        pos = ap.positional_embedding
        g = int(round(math.sqrt(pos.shape[0] - 1)))
        pos = torch.cat([pos[:1], interpolate_pos_grid(pos[1:], (g, g), (h, w))], dim=0)
        tokens = tokens + pos[:, None, :].to(tokens.dtype)
        out, _ = F.multi_head_attention_forward(
            query=tokens[:1],
            key=tokens,
            value=tokens,
            embed_dim_to_check=c,
            num_heads=ap.num_heads,
            q_proj_weight=ap.q_proj.weight,
            k_proj_weight=ap.k_proj.weight,
            v_proj_weight=ap.v_proj.weight,
            in_proj_weight=None,
            in_proj_bias=torch.cat([ap.q_proj.bias, ap.k_proj.bias, ap.v_proj.bias]),
            bias_k=None,
            bias_v=None,
            add_zero_attn=False,
            dropout_p=0.0,
            out_proj_weight=ap.c_proj.weight,
            out_proj_bias=ap.c_proj.bias,
            use_separate_proj_weight=True,
            training=False,
            need_weights=False,
        )
        return out[0]

    # --- ViT ------------------------------------------------------------------
    def _vit_embed(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        v = self.model.visual
        x = v.conv1(x)
        b, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(b, -1, -1)
        x = torch.cat([cls, x], dim=1)
        pos = v.positional_embedding
        gh, gw = (int(s) for s in v.grid_size)
        pos = torch.cat([pos[:1], interpolate_pos_grid(pos[1:], (gh, gw), (h, w))], dim=0)
        x = x + pos.to(x.dtype)
        return v.ln_pre(x), h, w

    def _vit_blocks(self, x: torch.Tensor, last: int):
        """Yield ``(index, tokens [B, 1+hw, C])`` after each block up to ``last`` (inclusive)."""
        tr = self.model.visual.transformer
        batch_first = getattr(tr, "batch_first", True)
        for i, blk in enumerate(tr.resblocks):
            if i > last:
                return
            x = blk(x) if batch_first else blk(x.transpose(0, 1)).transpose(0, 1)
            yield i, x

    def _vit_final_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x, h, w = self._vit_embed(x)
        for _, x in self._vit_blocks(x, len(self._layers) - 1):
            pass
        return x, h, w

    # --- Backbone API ---------------------------------------------------------
    def _extract(self, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        if not self.is_vit:
            return run_resnet_stages(self._stages(), self._rn_stem(x), names)
        wanted = set(names)
        if not wanted:
            return {}
        index = {s.name: i for i, s in enumerate(self._layers)}
        last = max(index[n] for n in wanted)
        tokens, h, w = self._vit_embed(x)
        out: dict[str, torch.Tensor] = {}
        for i, t in self._vit_blocks(tokens, last):
            name = self._layers[i].name
            if name in wanted:
                out[name] = t[:, 1:].transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)
        return out

    @property
    def tokenizer(self) -> Callable[[list[str]], torch.Tensor]:
        if self._tokenizer is None:
            from open_clip.tokenizer import SimpleTokenizer

            self._tokenizer = SimpleTokenizer(context_length=int(self.model.context_length))
        return self._tokenizer

    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings ``[N, D]``.

        With OpenAI's causal text transformer and end-of-text (argmax) pooling, the tokens after the
        longest prompt's end-of-text token cannot influence the result, so the sequence is cut there
        (same embeddings as open_clip's ``encode_text`` on all 77 positions, several times faster).
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        m = self.model
        device = m.token_embedding.weight.device
        tokens = self.tokenizer(list(prompts)).to(device)
        trim = getattr(m, "text_pool_type", "") == "argmax" and getattr(m, "attn_mask", None) is not None
        if not trim or isinstance(m.text_projection, nn.Linear):
            return m.encode_text(tokens, normalize=True).float()
        length = int(tokens.argmax(dim=-1).max()) + 1
        tokens = tokens[:, :length]
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(tokens).to(cast) + m.positional_embedding[:length].to(cast)
        x = m.transformer(x, attn_mask=m.attn_mask[:length, :length])
        x = m.ln_final(x)
        x = x[torch.arange(x.shape[0], device=device), tokens.argmax(dim=-1)]
        x = x @ m.text_projection
        return F.normalize(x.float(), dim=-1)

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised global CLIP image embeddings ``[B, D]`` (any input size)."""
        x = self.normalize(images)
        v = self.model.visual
        if not self.is_vit:
            pooled = self._rn_attnpool(self._rn_final_map(x))
        else:
            tokens, _, _ = self._vit_final_tokens(x)
            if getattr(v, "final_ln_after_pool", False):
                pooled = v.ln_post(tokens[:, 0] if v.pool_type == "tok" else tokens[:, 1:].mean(dim=1))
            else:
                tokens = v.ln_post(tokens)
                pooled = tokens[:, 0] if v.pool_type == "tok" else tokens[:, 1:].mean(dim=1)
            if v.proj is not None:
                pooled = pooled @ v.proj
        return F.normalize(pooled.float(), dim=-1)

    @torch.no_grad()
    def dense_image_embedding(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised per-location embeddings ``[B, D, H/s, W/s]`` in the text space (see module doc)."""
        x = self.normalize(images)
        v = self.model.visual
        if not self.is_vit:
            fmap = self._rn_final_map(x)
            ap = v.attnpool
            t = fmap.permute(0, 2, 3, 1)  # [B, h, w, C]
            t = F.linear(F.linear(t, ap.v_proj.weight, ap.v_proj.bias), ap.c_proj.weight, ap.c_proj.bias)
            dense = t.permute(0, 3, 1, 2)
        else:
            tokens, h, w = self._vit_final_tokens(x)
            t = v.ln_post(tokens[:, 1:])
            if v.proj is not None:
                t = t @ v.proj
            dense = t.transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)
        return F.normalize(dense.float(), dim=1).contiguous()


# --- registration ---------------------------------------------------------------------------------
_OPENAI_URL = "https://openaipublic.azureedge.net/clip/models/"
_CLIP_MODELS: dict[str, dict[str, Any]] = {
    "clip-rn50": dict(
        model_name="RN50",
        words="ModifiedResNet-50",
        arch="cnn",
        url=_OPENAI_URL + "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
        hf="timm/resnet50_clip.openai",
        layers=static_resnet_specs((3, 4, 6, 3), (64, 128, 256, 512)),
        text_dim=1024,
    ),
    "clip-rn101": dict(
        model_name="RN101",
        words="ModifiedResNet-101",
        arch="cnn",
        url=_OPENAI_URL + "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599/RN101.pt",
        hf="timm/resnet101_clip.openai",
        layers=static_resnet_specs((3, 4, 23, 3), (64, 128, 256, 512)),
        text_dim=512,
    ),
    "clip-vit-b16": dict(
        model_name="ViT-B-16",
        words="ViT-B/16",
        arch="vit",
        url=_OPENAI_URL + "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
        hf="timm/vit_base_patch16_clip_224.openai",
        layers=[LayerSpec(f"blocks.{i}", 768, 16, vit_stage(i, 12)) for i in range(12)],
        text_dim=512,
    ),
}


def _clip_factory(name: str, model_name: str) -> Callable[..., Backbone]:
    def factory(checkpoint: Path | None = None) -> Backbone:
        model = build_open_clip_model(model_name, quick_gelu=True)  # OpenAI CLIP uses QuickGELU
        if checkpoint is not None:
            sd = load_state_dict_file(checkpoint)
            load_weights_into(model, sd, path=checkpoint, backbone=name, ignore_keys=OPENAI_EXTRA_KEYS)
        return ClipBackbone(model, name=name, pretraining="clip" if checkpoint is not None else "random")

    return factory


for _name, _m in _CLIP_MODELS.items():
    _file = _m["model_name"] + ".pt"
    register_backbone(
        _name,
        _clip_factory(_name, _m["model_name"]),
        kind="clip",
        arch=_m["arch"],
        model=_m["words"],
        pretraining="clip",
        description=f"OpenAI CLIP {_m['model_name']} via open_clip; text tower, dense image-text features",
        has_text=True,
        text_dim=_m["text_dim"],
        layers=_m["layers"],
        weights=WeightsSpec(
            filenames=(
                _file,
                f"{_name}/open_clip_model.safetensors",
                f"{_name}/open_clip_pytorch_model.bin",
            ),
            cache_paths=(f"~/.cache/clip/{_file}",),
            hf_hub=((_m["hf"], "open_clip_model.safetensors"), (_m["hf"], "open_clip_pytorch_model.bin")),
            source=_m["url"],
        ),
        open_clip_model=_m["model_name"],
    )
