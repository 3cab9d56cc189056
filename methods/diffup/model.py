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
from fssbench.options import Option
from methods.diffup.baft import AUGMENTATIONS, IDENTITY, View, text_priors, transform_problem, visual_priors
from methods.diffup.diffusion import PREDICTIONS, PROCESSES, SCHEDULES, build_scheduler
from methods.diffup.dqm import error_target, iou_target
from methods.diffup.query_info import QUERY_INFO, info_channels, load_vae, query_info
from methods.diffup.uapf import LEVEL_RULES, PRIOR_NORMS, fuse, layer_groups, prior_channels, select_layers
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


@register_method
class DiffUp(Method):
    """DiffUp. Options (``option_specs``: default, type, allowed values) are discussed in ``methods/diffup/README.md``."""

    name: ClassVar[str] = "diffup"
    capabilities: ClassVar[Capabilities] = Capabilities(
        kinds=frozenset({"mask", "bbox", "scribble", "image", "text"}),
        min_shot=1,
        shot_ranges={"text": (0, 0)},
        trains=True,
        stitchable=True,
        batchable=True,
    )
    option_specs: ClassVar[Mapping[str, Option]] = {
        # BAFT
        "layers": Option("auto", (str, list), "blocks of the last three stages; all; or layer names",
                         choices=("auto", "all"), items=Option(None, str), min_len=1),
        "transform": Option("cosine", str, "T at evaluation: METRIC[:CONVERSION]", check=transform_problem),
        "train_transforms": Option(["cosine"], list, "T sampled per training batch (several: multi-metric training)",
                                   items=Option(None, str, check=transform_problem), min_len=1),
        "affinity": Option(True, bool, "affinity-enhanced priors (Eq. 11)"),
        "affinity_tau": Option(0.1, float, "softmax temperature of the query self-affinity", gt=0),
        # UAPF
        "level_rule": Option("stage", str, "how layers map onto the U-Net levels", choices=LEVEL_RULES),
        "prior_norm": Option("none", str, "per-map normalisation of the condition priors", choices=PRIOR_NORMS),
        "augment": Option(3, int, "augmented views per support (flip, 0.75x, colour, flip+1.25x: the first n)",
                          ge=0, le=len(AUGMENTATIONS)),
        "augment_shots": Option("one", str, "one: augment only at k = 1 (the paper); all: at every k", choices=("one", "all")),
        "selected": Option(2, int, "priors selected as extra UAPF outputs", ge=0),
        # UQDD
        "prior_size": Option(64, int, "side of the prior / diffusion grid", ge=16, multiple_of=8),
        "width": Option(40, int, "U-Net base width (40: ~4.2M trainable parameters, the paper's size)", ge=4, multiple_of=4),
        "query_info": Option(["sobel", "canny"], list, "backbone-independent query information (vae needs vae_path)",
                             items=Option(None, str, choices=QUERY_INFO), distinct=True),
        "vae_path": Option(None, (str, type(None)), "local diffusers AutoencoderKL folder (query_info vae)"),
        "lfe": Option(False, bool, "low-level feature enhancement: ties the decoder to its backbone"),
        "quality": Option("full", str, "DQM ablation (methods.diffup.unet)", choices=UNet.QUALITY),
        "lambda_err": Option(1.0, float, "weight of the error-map loss", ge=0),
        "lambda_iou": Option(1.0, float, "weight of the IoU loss", ge=0),
        # diffusion
        "process": Option("offset", str, "offset (Eq. 13, drifts toward the prior) or ddpm (plain)", choices=PROCESSES),
        "offset_scale": Option(1.0, float, "condition mean m = offset_scale * (2 p - 1)", ge=0),
        "timesteps": Option(250, int, "diffusion steps in training", ge=2),
        "beta_schedule": Option("linear", str, "noise schedule", choices=SCHEDULES),
        "prediction": Option("epsilon", str, "epsilon (Eq. 8) or sample (predict x_0)", choices=PREDICTIONS),
        "sampling_steps": Option(50, int, "DDIM steps (at most timesteps)", ge=1),
        "ensemble": Option(4, int, "samples averaged in probability space", ge=1),
        "eta": Option(0.0, float, "DDIM eta (0: deterministic given the start noise)", ge=0),
        # training
        "train_kinds": Option(["mask", "bbox", "scribble"], list, "annotation kind sampled per training batch",
                              items=Option(None, str, choices=tuple(sorted(capabilities.kinds))), min_len=1),
        # outputs
        "record_trajectory": Option(False, bool, "artefacts: x_t along the sampling and error maps at 3 noise levels"),
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

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> str | None:
        if options["sampling_steps"] > options["timesteps"]:
            return f"sampling_steps ({options['sampling_steps']}) must not exceed timesteps ({options['timesteps']})"
        if "vae" in options["query_info"] and options["vae_path"] is None:
            return "query_info vae needs vae_path: a local diffusers AutoencoderKL folder"
        return None

    def __init__(self, backbone: Backbone, **options: Any) -> None:
        super().__init__(backbone, **options)
        o = self.options
        self.info_names = list(o["query_info"])
        if "text" in o["train_kinds"] and not backbone.has_text:
            raise UserError(f"diffup train_kinds has text but {backbone.name or 'the backbone'} has no text tower; drop text or use a CLIP-style backbone")
        self.scheduler = build_scheduler(o["process"], o["timesteps"], o["beta_schedule"], o["prediction"])
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
