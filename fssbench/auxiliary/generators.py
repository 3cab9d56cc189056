"""Generator backends of auxiliary support images.

The interface: a :class:`Generator` maps one :class:`AuxRequest` -- support image, its mask, the
derived control map, class name, and one seed per wanted image -- to that many images aligned with
the support mask (pixel ``(y, x)`` of an auxiliary image shows what the mask says is there), and
says in :meth:`Generator.identity` everything its images depend on (the cache key).

* ``controlnet`` -- Stable Diffusion 1.5 + ControlNet 1.0 through diffusers, with DifFSS's reference
  settings (prompt, negative prompt, guidance 9, DDIM with eta 0, 512 px short side). Weights from a
  local folder only (``CONTROLNET_LAYOUT``).
* ``offline`` -- :class:`OfflineGenerator`: NOT a diffusion model. It runs here with no weights and
  changes appearance inside and outside the object (colour, texture, lighting, background) while
  keeping the layout, so that the harness, the suite and the reports can be exercised end to end on
  the embedded world. Its numbers say nothing about what a diffusion model would buy.
* ``pregenerated`` -- :class:`PregeneratedSource`: images someone generated before, read from a
  folder named as the reference code names them (``<support>_<class id>_<k>.jpg``); it generates
  nothing, and a missing file falls back to the real support (counted).
"""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from fssbench.errors import MissingFileError, UserError

BACKENDS: tuple[str, ...] = ("offline", "controlnet", "pregenerated")

REFERENCE_PROMPT = "a real shot photo of {}, best quality, extremely detailed"
"""DifFSS's positive prompt (``{}``: the class name)."""
REFERENCE_NEGATIVE = (
    "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, "
    "worst quality, low quality, artwork"
)
"""ControlNet's default negative prompt plus ``, artwork``, as in DifFSS's reference pipeline."""


@dataclass(frozen=True)
class AuxRequest:
    """What a generator gets for one support: ``len(seeds)`` images are wanted, one per seed."""

    support: str
    class_id: int
    class_name: str
    image: np.ndarray  # H x W x 3 uint8 RGB
    mask: np.ndarray  # H x W uint8 {0, 1}
    condition: str
    control: np.ndarray  # H x W x 3 uint8, the control map of ``condition``
    seeds: tuple[int, ...]


class Generator(ABC):
    """A backend that makes auxiliary images (see the module doc)."""

    backend: str = ""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Everything the images depend on besides the request (backend, weights hash, prompt, settings)."""

    @abstractmethod
    def generate(self, req: AuxRequest) -> list[np.ndarray]:
        """``len(req.seeds)`` images ``h x w x 3 uint8``, spatially aligned with ``req.mask``."""


# --- offline ---------------------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-spread smooth noise with features of about ``scale`` pixels."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), max(scale, 0.5), mode="wrap")
    return (n - n.mean()) / (n.std() + 1e-6)


def _hsv_jitter(rgb: np.ndarray, hue: float, sat: float, val: float) -> np.ndarray:
    """Shift hue by ``hue`` turns, scale saturation and value; float RGB in [0, 1] in and out."""
    from skimage.color import hsv2rgb, rgb2hsv

    hsv = rgb2hsv(np.clip(rgb, 0, 1))
    hsv[..., 0] = (hsv[..., 0] + hue) % 1.0
    hsv[..., 1] = np.clip(hsv[..., 1] * sat, 0, 1)
    hsv[..., 2] = np.clip(hsv[..., 2] * val, 0, 1)
    return hsv2rgb(hsv)


class OfflineGenerator(Generator):
    """A stand-in for the diffusion model, NOT one: mask-aligned appearance changes, no weights.

    Per image, from its seed only: the object gets a hue / saturation / brightness change and a
    multiplicative smooth texture; the background is either re-coloured the same way (more
    strongly), replaced by a procedural two-colour texture, or blurred; a lighting gradient in a
    random direction spans the image; the mask edge is feathered by one pixel. The layout (what is
    object and where) never changes, so the support's mask annotates the image exactly.

    The condition acts as it does on a ControlNet: the more it says about the object's inside, the
    more of the support's inner structure survives. Inside the object the image is a blend of the
    re-coloured support and a "free" rendering (its colours blurred away, new texture), weighted
    by ``STRUCTURE[condition]`` plus the control map's own edges (``hed`` and ``scribble`` carry the
    object's inner edges; ``mask`` only its silhouette).
    """

    STRUCTURE = {"mask": 0.2, "scribble": 0.45, "hed": 0.6}

    backend = "offline"
    version = 1

    def identity(self) -> dict[str, Any]:
        return {"backend": self.backend, "version": self.version}

    def generate(self, req: AuxRequest) -> list[np.ndarray]:
        base = self.STRUCTURE.get(req.condition, 0.2)
        edges = ndimage.gaussian_filter(req.control.astype(np.float32).mean(axis=2) / 255.0, 1.0) if req.condition != "mask" else 0.0
        keep = np.clip(base + 2.0 * edges, 0.0, 1.0)
        return [self._one(req.image, req.mask, keep, int(s)) for s in req.seeds]

    def _one(self, image: np.ndarray, mask: np.ndarray, keep: np.ndarray | float, seed: int) -> np.ndarray:
        rng = np.random.default_rng([seed, 4201])
        h, w = mask.shape
        rgb = image.astype(np.float32) / 255.0
        # the object: colour change, its inner structure kept by `keep`, and a new texture
        obj = _hsv_jitter(rgb, rng.uniform(-0.12, 0.12), rng.uniform(0.6, 1.5), rng.uniform(0.75, 1.25))
        free = ndimage.gaussian_filter(obj, sigma=(rng.uniform(3.0, 6.0),) * 2 + (0,))
        k = keep[..., None] if isinstance(keep, np.ndarray) else keep
        obj = k * obj + (1.0 - k) * free
        obj = obj * (1.0 + rng.uniform(0.05, 0.3) * _smooth_noise(rng, (h, w), rng.uniform(1.0, 4.0)))[..., None]
        # the background: re-coloured, procedural, or blurred
        mode = int(rng.integers(3))
        if mode == 0:
            bg = _hsv_jitter(rgb, rng.uniform(-0.5, 0.5), rng.uniform(0.4, 1.6), rng.uniform(0.6, 1.3))
        elif mode == 1:
            c1, c2 = rng.uniform(0.05, 0.95, size=3), rng.uniform(0.05, 0.95, size=3)
            t = 1.0 / (1.0 + np.exp(-2.0 * _smooth_noise(rng, (h, w), rng.uniform(2.0, 0.15 * max(h, w)))))
            bg = c1 * t[..., None] + c2 * (1.0 - t[..., None])
            bg = bg + 0.05 * rng.standard_normal((h, w, 1)).astype(np.float32)
        else:
            bg = ndimage.gaussian_filter(rgb, sigma=(rng.uniform(1.5, 4.0),) * 2 + (0,))
            bg = _hsv_jitter(bg, rng.uniform(-0.2, 0.2), 1.0, rng.uniform(0.8, 1.2))
        if mode != 1:  # a colour cast and a texture, so that even a grey background changes
            bg = bg * rng.uniform(0.65, 1.35, size=3) + rng.uniform(-0.08, 0.08, size=3)
            bg = bg * (1.0 + rng.uniform(0.05, 0.25) * _smooth_noise(rng, (h, w), rng.uniform(2.0, 8.0)))[..., None]
        alpha = ndimage.gaussian_filter(mask.astype(np.float32), 0.7)[..., None]
        out = alpha * obj + (1.0 - alpha) * bg
        # lighting: a linear gradient in a random direction
        theta = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        ramp = (np.cos(theta) * (xx / max(w - 1, 1) - 0.5) + np.sin(theta) * (yy / max(h - 1, 1) - 0.5))
        out = out * (1.0 + rng.uniform(0.0, 0.5) * ramp)[..., None]
        return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


# --- controlnet ------------------------------------------------------------------------------------
CONTROLNET_LAYOUT = {
    "base": "controlnet/stable-diffusion-v1-5",
    "mask": "controlnet/sd-controlnet-seg",
    "scribble": "controlnet/sd-controlnet-scribble",
    "hed": "controlnet/sd-controlnet-hed",
}
"""Folders (diffusers format) under the weights directory: SD 1.5 (``model_index.json``) and one
ControlNet 1.0 per condition (``config.json`` + weights): the Hugging Face repos
``stable-diffusion-v1-5/stable-diffusion-v1-5`` and ``lllyasviel/sd-controlnet-{seg,scribble,hed}``."""

CONTROLNET_SOURCES = {
    "base": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "mask": "lllyasviel/sd-controlnet-seg",
    "scribble": "lllyasviel/sd-controlnet-scribble",
    "hed": "lllyasviel/sd-controlnet-hed",
}


def controlnet_missing(weights_dir: Path | None, condition: str) -> str | None:
    """One line naming what the controlnet backend lacks for ``condition``, or ``None``."""
    if weights_dir is None:
        return (
            "aux backend controlnet needs local weights: pass --weights-dir DIR (or set $FSSBENCH_WEIGHTS) holding "
            f"{CONTROLNET_LAYOUT['base']}/ and {CONTROLNET_LAYOUT[condition]}/ (diffusers format); nothing is downloaded"
        )
    for part, marker in (("base", "model_index.json"), (condition, "config.json")):
        d = Path(weights_dir) / CONTROLNET_LAYOUT[part]
        if not (d / marker).is_file():
            return (
                f"aux backend controlnet: {d}/{marker} not found; put the diffusers folder of "
                f"{CONTROLNET_SOURCES[part]} at {d}; nothing is downloaded"
            )
    return None


def folder_hash(folder: Path) -> str:
    """SHA-256 over every file of a weights folder (relative path + content), memoised per file by
    (size, mtime) in ``.fssbench-sha256.json`` beside it when the folder is writable."""
    memo_path = folder / ".fssbench-sha256.json"
    try:
        memo = json.loads(memo_path.read_text()) if memo_path.is_file() else {}
    except ValueError:
        memo = {}
    h = hashlib.sha256()
    changed = False
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != memo_path.name):
        rel = f.relative_to(folder).as_posix()
        st = f.stat()
        key = f"{st.st_size}:{st.st_mtime_ns}"
        if memo.get(rel, {}).get("key") != key:
            from fssbench.results import sha256_file

            memo[rel] = {"key": key, "sha256": sha256_file(f)}
            changed = True
        h.update(f"{rel}\0{memo[rel]['sha256']}\n".encode())
    if changed:
        try:
            tmp = memo_path.with_name(f".{memo_path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(memo, sort_keys=True))
            tmp.replace(memo_path)
        except OSError:
            pass  # a read-only weights folder: hash again next time
    return h.hexdigest()


def resize_for_generation(control: np.ndarray, size: int) -> np.ndarray:
    """ControlNet's input sizing: short side ``size``, both sides rounded to a multiple of 64."""
    h, w = control.shape[:2]
    k = size / min(h, w)
    hh, ww = int(np.round(h * k / 64.0)) * 64, int(np.round(w * k / 64.0)) * 64
    return np.asarray(Image.fromarray(control).resize((max(ww, 64), max(hh, 64)), Image.NEAREST))


class ControlNetGenerator(Generator):
    """SD 1.5 + ControlNet (diffusers), DifFSS's reference settings; weights from local folders only."""

    backend = "controlnet"

    def __init__(
        self,
        weights_dir: Path | None,
        condition: str,
        *,
        prompt: str = REFERENCE_PROMPT,
        negative_prompt: str = REFERENCE_NEGATIVE,
        guidance: float = 9.0,
        steps: int = 20,
        size: int = 512,
        device: str = "auto",
    ) -> None:
        missing = controlnet_missing(weights_dir, condition)
        if missing:
            raise MissingFileError(missing)
        self.weights_dir = Path(weights_dir)  # type: ignore[arg-type]
        self.condition = condition
        self.prompt, self.negative_prompt = prompt, negative_prompt
        self.guidance, self.steps, self.size = float(guidance), int(steps), int(size)
        self.device = device
        self._pipe = None
        self._hash: str | None = None

    def identity(self) -> dict[str, Any]:
        if self._hash is None:
            base = folder_hash(self.weights_dir / CONTROLNET_LAYOUT["base"])
            cn = folder_hash(self.weights_dir / CONTROLNET_LAYOUT[self.condition])
            self._hash = hashlib.sha256(f"{base}:{cn}".encode()).hexdigest()
        return {
            "backend": self.backend,
            "weights_sha256": self._hash,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "guidance": self.guidance,
            "steps": self.steps,
            "size": self.size,
            "scheduler": "ddim",
            "eta": 0.0,
        }

    def pipeline(self):
        """The diffusers pipeline, loaded once (``local_files_only``; no safety checker)."""
        if self._pipe is None:
            import torch
            from diffusers import ControlNetModel, DDIMScheduler, StableDiffusionControlNetPipeline

            from fssbench.dispatch import auto_device

            dev = torch.device(auto_device() if self.device == "auto" else self.device)
            dtype = torch.float16 if dev.type == "cuda" else torch.float32
            kw = {} if dtype == torch.float32 else {"torch_dtype": dtype}  # fp32 is the default
            try:
                cn = ControlNetModel.from_pretrained(self.weights_dir / CONTROLNET_LAYOUT[self.condition], local_files_only=True, **kw)
                pipe = StableDiffusionControlNetPipeline.from_pretrained(
                    self.weights_dir / CONTROLNET_LAYOUT["base"], controlnet=cn, safety_checker=None,
                    feature_extractor=None, requires_safety_checker=False, local_files_only=True, **kw,
                )
            except (OSError, ValueError, ImportError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise UserError(f"cannot load the controlnet backend from {self.weights_dir} ({first})") from None
            pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
            pipe.set_progress_bar_config(disable=True)
            self._pipe = pipe.to(dev)
        return self._pipe

    def generate(self, req: AuxRequest) -> list[np.ndarray]:
        import torch

        pipe = self.pipeline()
        control = Image.fromarray(resize_for_generation(req.control, self.size))
        n = len(req.seeds)
        out = pipe(
            prompt=[self.prompt.format(req.class_name)] * n,
            negative_prompt=[self.negative_prompt] * n,
            image=control,
            num_inference_steps=self.steps,
            guidance_scale=self.guidance,
            eta=0.0,
            generator=[torch.Generator().manual_seed(int(s)) for s in req.seeds],
            output_type="np",
        ).images
        return [np.clip(np.round(im * 255.0), 0, 255).astype(np.uint8) for im in out]


# --- pregenerated ----------------------------------------------------------------------------------
def reference_name(support: str, class_id: int, k: int) -> str:
    """The reference code's file stem of auxiliary image ``k`` of a support: ``<support>_<class>_<k>``
    (``<support>``: the last component of the dataset's image name, e.g. ``2008_000123``)."""
    return f"{Path(support).name}_{int(class_id)}_{int(k)}"


class PregeneratedSource:
    """Auxiliary images from a folder: ``<dir>/<support>_<class id>_<k>.jpg`` (or ``.png``)."""

    backend = "pregenerated"

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise MissingFileError(
                f"aux backend pregenerated: folder {self.folder} not found; set aux.dir to the folder of "
                "<support>_<class id>_<k>.jpg images"
            )

    def identity(self) -> dict[str, Any]:
        return {"backend": self.backend, "dir": str(self.folder)}

    def lookup(self, support: str, class_id: int, k: int) -> np.ndarray | None:
        stem = reference_name(support, class_id, k)
        for ext in (".jpg", ".png", ".jpeg"):
            p = self.folder / f"{stem}{ext}"
            if p.is_file():
                try:
                    with Image.open(p) as im:
                        return np.asarray(im.convert("RGB"))
                except OSError:
                    raise UserError(f"aux image {p} cannot be read; replace or delete it") from None
        return None
