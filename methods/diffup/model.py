"""DiffUp (Chen et al., "No Re-Train, More Gain: Upgrading Backbones with Diffusion model for
Pixel-Wise and Weakly-Supervised Few-Shot Segmentation", arXiv 2407.16182), registered as ``diffup``.

No official code exists; this is a reference implementation from the paper's text. The pipeline:

1. **BAFT** (``methods.diffup.baft``): per selected backbone layer, every support cue (a visual
   support and its augmented views, or the text prompt) becomes a foreground and a background prior
   on the query's feature grid, in [0, 1], through a parameter-free transform T (cosine by default);
2. **UAPF** (``methods.diffup.uapf``): the layers are grouped onto the U-Net's levels by a fixed
   rule; per level, mean, variance and a fixed number of selected priors over the cues;
3. **UQDD** (``methods.diffup.unet``, ``methods.diffup.dqm``): a conditional diffusion U-Net that
   denoises the query mask (scaled to [-1, 1]) at the prior resolution, conditioned per level on the
   UAPF outputs and the query's edges (SCM), with the DQM error-map / IoU branch;
4. **diffusion** (``methods.diffup.diffusion``): DDPM training (250 steps), the condition-offset
   forward process (default) or plain DDPM, DDIM sampling (50 steps) of an ensemble averaged in
   probability space.

Only the U-Net and DQM are trained, so the decoder's parameters (and state-dict keys and shapes) are
the same for every backbone and it stitches onto any other (``lfe`` excepted). See
``methods/diffup/README.md`` for every choice the paper leaves open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fssbench.annotations import derive_annotation
from fssbench.backbones.base import Backbone
from fssbench.episode import EpisodeBatch
from fssbench.errors import UserError
from fssbench.methods import Capabilities, Method, Prediction, TrainConfig, register_method
from methods.diffup.baft import AUGMENTATIONS, IDENTITY, View, parse_transform, text_priors, visual_priors
from methods.diffup.diffusion import PREDICTIONS, build_scheduler
from methods.diffup.dqm import error_target, iou_target
from methods.diffup.query_info import check_info, info_channels, load_vae, query_info
from methods.diffup.uapf import LEVEL_RULES, PRIOR_NORMS, fuse, layer_groups, level_sizes, prior_channels, select_layers
from methods.diffup.unet import UNet, area

VISUAL_KINDS = ("mask", "bbox", "scribble", "image")
TRAJECTORY_FRACTIONS = (1.0, 0.8, 0.6, 0.4, 0.2, 0.0)
"""Trajectory artefact: x_t when this fraction of the sampling steps remains (50/40/30/20/10/0 of 50)."""
ERROR_NOISE_LEVELS = (0.1, 0.5, 0.9)
"""Error-map artefact: the predicted error map at the sampling steps nearest these fractions of T
(low/medium/high noise); ``error_maps_noise`` records the fraction each was actually taken at."""


@dataclass
class Conditions:
    """Everything the U-Net is conditioned on for one batch (computed without gradients)."""

    levels: list[torch.Tensor]  # 4 x [B, C, s, s]
    prob: torch.Tensor  # fused foreground prior [B, 1, R, R]
    image: torch.Tensor  # query image at R [B, 3, R, R]
    lfe: torch.Tensor | None  # low-level query feature (option lfe)


def _bool(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise UserError(f"diffup option {name} must be true or false, got {v!r}")
    return v


def _int(name: str, v: Any, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise UserError(f"diffup option {name} must be an integer >= {lo}, got {v!r}")
    return v


def _num(name: str, v: Any, lo: float = 0.0, strict: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (v <= lo if strict else v < lo):
        raise UserError(f"diffup option {name} must be a number {'>' if strict else '>='} {lo}, got {v!r}")
    return float(v)


@register_method
class DiffUp(Method):
    """DiffUp. Options (``default_config``) are documented in ``methods/diffup/README.md``."""

    name: ClassVar[str] = "diffup"
    capabilities: ClassVar[Capabilities] = Capabilities(
        kinds=frozenset({"mask", "bbox", "scribble", "image", "text"}),
        min_shot=1,
        shot_ranges={"text": (0, 0)},
        trains=True,
        stitchable=True,
        batchable=True,
    )
    default_config: ClassVar[dict[str, Any]] = {
        # BAFT
        "layers": "auto",  # blocks of the last three stages; "all"; or a list of layer names
        "transform": "cosine",  # T at evaluation: METRIC[:CONVERSION], METRIC cosine|l1|l2, CONVERSION lin|exp|inv
        "train_transforms": ["cosine"],  # T sampled per training batch (multi-metric training: several)
        "affinity": True,  # affinity-enhanced priors (Eq. 11)
        "affinity_tau": 0.1,  # softmax temperature of the query self-affinity
        # UAPF
        "level_rule": "stage",  # "stage" | "depth": how layers map onto the U-Net levels
        "prior_norm": "none",  # "none" | "minmax" | "standard": per-map normalisation of the condition priors
        "augment": 3,  # augmented views per support (flip, 0.75x, colour, flip+1.25x: the first n)
        "augment_shots": "one",  # "one": augment only at k = 1 (the paper), "all": at every k
        "selected": 2,  # priors selected as extra UAPF outputs
        # UQDD
        "prior_size": 64,  # side of the prior / diffusion grid
        "width": 40,  # U-Net base width (40: ~4.2M trainable parameters, the paper's size)
        "query_info": ["sobel", "canny"],  # backbone-independent query information ("vae" needs vae_path)
        "vae_path": None,  # local diffusers AutoencoderKL folder (query_info "vae")
        "lfe": False,  # low-level feature enhancement: ties the decoder to its backbone
        "quality": "full",  # DQM ablation: "full" | "no_iou" | "no_err" | "none" (methods.diffup.unet)
        "lambda_err": 1.0,
        "lambda_iou": 1.0,
        # diffusion
        "process": "offset",  # "offset" (Eq. 13, drifts toward the prior) | "ddpm" (plain)
        "offset_scale": 1.0,  # condition mean m = offset_scale * (2 p - 1)
        "timesteps": 250,
        "beta_schedule": "linear",
        "prediction": "epsilon",  # "epsilon" (Eq. 8) | "sample" (predict x_0)
        "sampling_steps": 50,
        "ensemble": 4,
        "eta": 0.0,  # DDIM eta (0: deterministic given the start noise)
        # training
        "train_kinds": ["mask", "bbox", "scribble"],  # annotation kind sampled per training batch
        # outputs
        "record_trajectory": False,  # artefacts: x_t along the sampling and error maps at 3 noise levels
    }
    eval_options: ClassVar[frozenset[str]] = frozenset(
        {"transform", "sampling_steps", "ensemble", "eta", "record_trajectory"}
    )
    mask_outputs: ClassVar[frozenset[str]] = frozenset({"prior"})
    quiet_defaults: ClassVar[frozenset[str]] = frozenset({"quality"})
    artefact_options: ClassVar[frozenset[str]] = frozenset({"record_trajectory"})
    default_train: ClassVar[TrainConfig] = TrainConfig(
        optimizer="adam", lr=1e-3, weight_decay=0.0, batch_size=8, schedule="constant", shot=1, kind="mask"
    )

    def __init__(self, backbone: Backbone, **options: Any) -> None:
        super().__init__(backbone, **options)
        o = self.options
        parse_transform(o["transform"])
        tts = o["train_transforms"]
        if not isinstance(tts, (list, tuple)) or not tts:
            raise UserError(f"diffup option train_transforms must be a non-empty list of transforms, got {tts!r}")
        for t in tts:
            parse_transform(t)
        _bool("affinity", o["affinity"])
        _num("affinity_tau", o["affinity_tau"], 0.0, strict=True)
        if o["level_rule"] not in LEVEL_RULES:
            raise UserError(f"diffup option level_rule must be one of {', '.join(LEVEL_RULES)}, got {o['level_rule']!r}")
        if o["prior_norm"] not in PRIOR_NORMS:
            raise UserError(f"diffup option prior_norm must be one of {', '.join(PRIOR_NORMS)}, got {o['prior_norm']!r}")
        _int("augment", o["augment"], 0)
        if o["augment"] > len(AUGMENTATIONS):
            raise UserError(f"diffup option augment must be at most {len(AUGMENTATIONS)}, got {o['augment']}")
        if o["augment_shots"] not in ("one", "all"):
            raise UserError(f"diffup option augment_shots must be one or all, got {o['augment_shots']!r}")
        _int("selected", o["selected"], 0)
        level_sizes(_int("prior_size", o["prior_size"], 16))
        _int("width", o["width"], 4)
        if o["width"] % 4:
            raise UserError(f"diffup option width must be a multiple of 4, got {o['width']}")
        self.info_names = check_info(o["query_info"])
        _bool("lfe", o["lfe"])
        if o["quality"] not in UNet.QUALITY:
            raise UserError(f"diffup option quality must be one of {', '.join(UNet.QUALITY)}, got {o['quality']!r}")
        _num("lambda_err", o["lambda_err"])
        _num("lambda_iou", o["lambda_iou"])
        _num("offset_scale", o["offset_scale"])
        if o["prediction"] not in PREDICTIONS:
            raise UserError(f"diffup option prediction must be one of {', '.join(PREDICTIONS)}, got {o['prediction']!r}")
        _int("sampling_steps", o["sampling_steps"], 1)
        _int("ensemble", o["ensemble"], 1)
        _num("eta", o["eta"])
        _bool("record_trajectory", o["record_trajectory"])
        kinds = o["train_kinds"]
        if not isinstance(kinds, (list, tuple)) or not kinds or any(k not in self.capabilities.kinds for k in kinds):
            raise UserError(
                f"diffup option train_kinds must be a non-empty list of {', '.join(sorted(self.capabilities.kinds))}, got {kinds!r}"
            )
        if "text" in kinds and not backbone.has_text:
            raise UserError(f"diffup train_kinds has text but {backbone.name or 'the backbone'} has no text tower; drop text or use a CLIP-style backbone")
        self.scheduler = build_scheduler(o["process"], _int("timesteps", o["timesteps"], 2), o["beta_schedule"], o["prediction"])
        if o["sampling_steps"] > o["timesteps"]:
            raise UserError(f"diffup sampling_steps ({o['sampling_steps']}) must not exceed timesteps ({o['timesteps']})")
        self._configure(backbone)
        cond = prior_channels(o["selected"]) + info_channels(self.info_names)
        lfe_ch = self._lfe_layer(backbone).channels if o["lfe"] else None
        self.unet = UNet(o["width"], cond, o["timesteps"], lfe_ch, quality=o["quality"])
        vae = load_vae(o["vae_path"]) if "vae" in self.info_names else None
        object.__setattr__(self, "vae", vae)  # frozen, not part of the decoder's state

    # --- backbone ----------------------------------------------------------------------------------
    @staticmethod
    def _lfe_layer(backbone: Backbone):
        return backbone.stage_layers[0]

    def _configure(self, backbone: Backbone) -> None:
        specs = select_layers(backbone.layers, self.options["layers"])
        self.layer_names = [s.name for s in specs]
        self.groups = layer_groups(specs, self.options["level_rule"])

    @classmethod
    def stitch_refused(cls, options: Mapping[str, Any]) -> str | None:
        if options.get("lfe"):
            return (
                "diffup with lfe: true fuses low-level features of its training backbone into the U-Net, which ties "
                "the decoder to that backbone; set lfe: false to stitch"
            )
        return super().stitch_refused(options)

    @classmethod
    def stitch_incompatible(cls, options: Mapping[str, Any], train: Any, eval_: Any) -> str | None:
        layers = options.get("layers", "auto")
        if isinstance(layers, (list, tuple)):
            specs = eval_.layer_specs() if hasattr(eval_, "layer_specs") else eval_.layers
            missing = sorted(set(layers) - {s.name for s in specs})
            if missing:
                return f"diffup layers {', '.join(missing)} do not exist in {getattr(eval_, 'name', 'the evaluation backbone')}; use layers: auto"
        return None

    def set_backbone(self, backbone: Backbone) -> None:
        """Stitch: the same decoder reads the new backbone's priors (layers and level groups re-derived)."""
        super().set_backbone(backbone)
        self._configure(backbone)

    # --- conditions ----------------------------------------------------------------------------------
    def _views(self, shot: int) -> list[View]:
        n = int(self.options["augment"])
        if shot > 1 and self.options["augment_shots"] == "one":
            n = 0
        return [IDENTITY, *AUGMENTATIONS[:n]]

    @torch.no_grad()
    def conditions(
        self,
        batch: EpisodeBatch,
        kind: str,
        support_fg: torch.Tensor | None,
        support_bg: torch.Tensor | None,
        transform_name: str,
    ) -> Conditions:
        """BAFT + UAPF + query information for a batch whose supports are of ``kind``."""
        o = self.options
        r = int(o["prior_size"])
        names = list(self.layer_names)
        lfe_name = self._lfe_layer(self.backbone).name if o["lfe"] else None
        tau = float(o["affinity_tau"]) if o["affinity"] else None
        extra = [lfe_name] if lfe_name else []
        if kind == "text":
            q_feats = self.backbone(batch.query_image, list(dict.fromkeys(names + extra)))
            priors = text_priors(self.backbone, names, batch.query_image, q_feats, batch.prompts, self._views(1), transform_name, tau)
        else:
            if batch.shot < 1:
                raise UserError(f"diffup needs at least one support image for kind '{kind}'")
            priors, q_feats = visual_priors(
                self.backbone, names, batch.query_image, batch.support_images, support_fg, support_bg,
                self._views(batch.shot), transform_name, tau, extra,
            )
        fused = fuse(priors, self.groups, r, int(o["selected"]), o["prior_norm"])
        info = query_info(batch.query_image, self.info_names, r, self._device_vae(batch.query_image.device))
        levels = [torch.cat([lv, area(info, lv.shape[-1])], dim=1) if info.shape[1] else lv for lv in fused.levels]
        image = F.interpolate(batch.query_image.float(), size=(r, r), mode="area")
        return Conditions(levels, fused.prob, image, q_feats[lfe_name] if lfe_name else None)

    def _device_vae(self, device: torch.device):
        if self.vae is not None and next(self.vae.parameters()).device != device:
            self.vae.to(device)
        return self.vae

    def _offset(self, prob: torch.Tensor) -> torch.Tensor | None:
        if self.options["process"] != "offset":
            return None
        return float(self.options["offset_scale"]) * (2.0 * prob - 1.0)

    # --- training ----------------------------------------------------------------------------------
    def _training_annotation(self, batch: EpisodeBatch) -> tuple[str, torch.Tensor | None, torch.Tensor | None]:
        """The kind of this batch's supports: one of ``train_kinds`` drawn from the torch RNG, derived
        from the supports' masks (``fssbench.annotations.derive_annotation``) when the batch holds
        masks; a batch of another kind trains on that kind as it is."""
        kinds = list(self.options["train_kinds"])
        if batch.kind != "mask" or kinds == ["mask"]:
            return batch.kind, batch.support_fg, batch.support_bg
        kind = kinds[int(torch.randint(len(kinds), ()).item())]
        if kind == "mask":
            return kind, batch.support_fg, batch.support_bg
        if kind in ("image", "text"):
            return kind, None, None
        fg = batch.support_fg.detach().cpu().numpy()
        ign = batch.support_ignore.detach().cpu().numpy()
        out_fg, out_bg = np.zeros_like(fg), np.zeros_like(fg)
        for i in range(fg.shape[0]):
            for j in range(fg.shape[1]):
                ann = derive_annotation(kind, fg[i, j] > 0.5, ign[i, j])
                out_fg[i, j], out_bg[i, j] = ann.fg, ann.bg
        dev = batch.support_fg.device
        return kind, torch.from_numpy(out_fg).to(dev), torch.from_numpy(out_bg).to(dev)

    def _targets(self, batch: EpisodeBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """x_0 (the query mask at R in {-1, 1}; ignore pixels count as background) and the valid map."""
        r = int(self.options["prior_size"])
        ignore = batch.query_ignore.float()
        fg = batch.query_mask.float() * (1 - ignore)
        x0 = (F.interpolate(fg[:, None], size=(r, r), mode="area") > 0.5).float() * 2 - 1
        valid = (F.interpolate(1 - ignore[:, None], size=(r, r), mode="area") > 0.5).float()
        return x0, valid

    def loss(self, batch: EpisodeBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """diffusion loss + lambda_err * error-map loss + lambda_iou * IoU loss (Eq. 21)."""
        o = self.options
        kind, fg, bg = self._training_annotation(batch)
        tts = list(o["train_transforms"])
        tname = tts[int(torch.randint(len(tts), ()).item())] if len(tts) > 1 else tts[0]
        cond = self.conditions(batch, kind, fg, bg, tname)
        x0, valid = self._targets(batch)
        b = x0.shape[0]
        t = torch.randint(0, int(o["timesteps"]), (b,), device=x0.device)
        noise = batch.randn(*x0.shape[1:])
        offset = self._offset(cond.prob)
        xt = self.scheduler.add_noise(x0, noise, t, offset).float()
        out, err, iou = self.unet(xt, t, cond.levels, cond.image, cond.lfe)
        target = noise if o["prediction"] == "epsilon" else x0
        denom = valid.sum().clamp_min(1.0)
        l_diff = ((out.float() - target) ** 2 * valid).sum() / denom
        zero = l_diff.new_zeros(())
        l_err = ((err.float() - error_target(x0, xt)) ** 2 * valid).sum() / denom if err is not None else zero
        l_iou = ((iou.float() - iou_target(xt, x0, valid)) ** 2).mean() if iou is not None else zero
        loss = l_diff + float(o["lambda_err"]) * l_err + float(o["lambda_iou"]) * l_iou
        return loss, {"loss": float(loss.detach()), "diff": float(l_diff.detach()), "err": float(l_err.detach()), "iou": float(l_iou.detach())}

    # --- inference -----------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, cond: Conditions, batch: EpisodeBatch) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """DDIM sampling of ``ensemble`` members per episode in one U-Net batch (episodes x members).

        Returns the ensemble's foreground probability ``[B, 1, R, R]``, the predicted IoU ``[B]`` (the IoU
        head at the last step, averaged over members) and the artefacts asked for."""
        o = self.options
        n, r = int(o["ensemble"]), int(o["prior_size"])
        b = cond.image.shape[0]
        steps = int(o["sampling_steps"])
        eta = float(o["eta"])
        sched = self.scheduler
        sched.set_timesteps(steps)
        timesteps = [int(t) for t in sched.timesteps]

        def rep(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.repeat_interleave(n, dim=0)

        offset = rep(self._offset(cond.prob))
        levels = [rep(c) for c in cond.levels]
        image, lfe = rep(cond.image), rep(cond.lfe)
        x = batch.randn(n, 1, r, r).flatten(0, 1)
        if offset is not None:
            x = x + offset
        record = bool(o["record_trajectory"])
        marks: dict[int, list[int]] = {}  # steps done -> trajectory slots recorded then
        for k, f in enumerate(TRAJECTORY_FRACTIONS):
            marks.setdefault(round(steps * (1 - f)), []).append(k)
        err_steps: dict[int, list[int]] = {}  # step index -> error-map slots
        err_noise: list[float] = []  # the noise level each slot was taken at (t / (T - 1))
        for k, f in enumerate(ERROR_NOISE_LEVELS):
            nearest = min(range(steps), key=lambda i: abs(timesteps[i] - f * (int(o["timesteps"]) - 1)))
            err_steps.setdefault(nearest, []).append(k)
            err_noise.append(float(timesteps[nearest]) / (int(o["timesteps"]) - 1))
        traj: dict[int, torch.Tensor] = {}
        errs: dict[int, torch.Tensor] = {}

        def prob_of(v: torch.Tensor) -> torch.Tensor:
            return ((v.float() + 1) / 2).clamp(0, 1).view(b, n, r, r).mean(1)

        iou = torch.zeros(b * n, device=x.device)
        for i, t in enumerate(timesteps):
            if record and i in marks:
                traj.update({k: prob_of(x) for k in marks[i]})
            tt = torch.full((b * n,), t, device=x.device, dtype=torch.long)
            out, err, step_iou = self.unet(x, tt, levels, image, lfe)
            iou = step_iou if step_iou is not None else torch.full((b * n,), float("nan"), device=x.device)
            if record and i in err_steps and err is not None:
                errs.update({k: err.float().view(b, n, r, r).mean(1) for k in err_steps[i]})
            noise = batch.randn(n, 1, r, r).flatten(0, 1) if eta > 0 else None
            x = sched.step(out.float(), t, x, offset, eta=eta, noise=noise).float()
        arts: dict[str, torch.Tensor] = {}
        if record:
            traj.update({k: prob_of(x) for k in marks[steps]})
            arts["trajectory"] = torch.stack([traj[k] for k in sorted(traj)], dim=1)
            if errs:
                arts["error_maps"] = torch.stack([errs[k] for k in sorted(errs)], dim=1)
            arts["prior_lowres"] = cond.prob[:, 0].float()
            # the x-axis of the report's trajectory / error-map figures (the same for every episode)
            arts["trajectory_remaining"] = torch.tensor(TRAJECTORY_FRACTIONS).repeat(b, 1)
            if errs:
                arts["error_maps_noise"] = torch.tensor(err_noise).repeat(b, 1)  # as sampled (few steps: coarse)
        return prob_of(x)[:, None], iou.float().view(b, n).mean(1), arts

    @torch.no_grad()
    def predict(self, batch: EpisodeBatch) -> Prediction:
        """Scores ``[B, 2, H, W]`` (1 - p, p) from the ensemble's foreground probability ``p``; mask output
        ``prior`` (the fused mean prior), scalar ``pred_iou``; artefacts with ``record_trajectory``."""
        size = batch.query_image.shape[-2:]
        cond = self.conditions(batch, batch.kind, batch.support_fg, batch.support_bg, self.options["transform"])
        prob, pred_iou, arts = self.sample(cond, batch)
        up = F.interpolate(prob, size=size, mode="bilinear", align_corners=False).clamp(0, 1)
        prior = F.interpolate(cond.prob.float(), size=size, mode="bilinear", align_corners=False).clamp(0, 1)[:, 0]
        has_iou = self.unet.dqm is not None and self.unet.dqm.iou is not None
        scalars = {"pred_iou": pred_iou} if has_iou else {}
        return Prediction(scores=torch.cat([1 - up, up], dim=1), masks={"prior": prior}, scalars=scalars, artefacts=arts)

    def parameter_count(self) -> int:
        """Trainable parameters (the U-Net and DQM; the same for every backbone unless ``lfe``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


__all__: Sequence[str] = ["DiffUp", "Conditions"]
