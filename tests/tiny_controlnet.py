"""A tiny, randomly initialised Stable Diffusion + ControlNet folder in the diffusers layout the
``controlnet`` backend reads (``fssbench.auxiliary.generators.CONTROLNET_LAYOUT``), built offline:
diffusers and transformers model classes with small configs and a byte-level CLIP vocabulary with
no merges. It exercises the real loading and sampling code path; its images are noise."""

from __future__ import annotations

import json
from pathlib import Path


def _byte_symbols() -> list[str]:
    """The 256 byte symbols of byte-level BPE (printable bytes stand for themselves)."""
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
    out, extra = [], 0
    for b in range(256):
        if b in keep:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


def build_tiny_controlnet(root: Path, conditions: tuple[str, ...] = ("seg", "scribble", "hed")) -> Path:
    """Write ``root/controlnet/{stable-diffusion-v1-5, sd-controlnet-<c>}``; returns ``root``."""
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8, norm_num_groups=2, attention_head_dim=2,
    )
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8))
    vae = AutoencoderKL(
        block_out_channels=[4, 8], in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, norm_num_groups=2,
    )
    syms = _byte_symbols()
    vocab = {t: i for i, t in enumerate(syms + [s + "</w>" for s in syms])}
    n = len(vocab)
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = n, n + 1
    text = CLIPTextModel(CLIPTextConfig(
        bos_token_id=n, eos_token_id=n + 1, pad_token_id=n + 1, hidden_size=8, intermediate_size=16,
        num_attention_heads=2, num_hidden_layers=1, vocab_size=n + 2, max_position_embeddings=77, projection_dim=8,
    ))
    tok_dir = root / "_tokenizer_src"
    tok_dir.mkdir(parents=True, exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(root / "controlnet" / "stable-diffusion-v1-5")
    for c in conditions:
        controlnet.save_pretrained(root / "controlnet" / f"sd-controlnet-{c}")
    return root
