"""Zero-training prototype baseline: masked average pooling + cosine similarity.

The floor every method must beat. For each shot, foreground and background prototypes are the
masked averages of the support features over the annotated foreground and background pixels;
the k shots' prototypes are averaged. The query is scored by cosine similarity to both
prototypes (per layer, averaged over layers) and labelled by the nearer one. It has no trained
state, so it pairs with any backbone (stitchable) and supports every pixel-level annotation kind.
"""

from __future__ import annotations

from typing import ClassVar, Mapping

import torch
import torch.nn.functional as F

from fssbench.episode import EpisodeBatch
from fssbench.masking import hybrid_masked_features, masked_average, resize_mask
from fssbench.methods import Capabilities, Method, TrainConfig, register_method
from fssbench.options import Option


@register_method
class Prototype(Method):
    name: ClassVar[str] = "prototype"
    capabilities: ClassVar[Capabilities] = Capabilities(
        kinds=frozenset({"mask", "bbox", "scribble"}), min_shot=1, trains=False, stitchable=True, batchable=True
    )
    option_specs: ClassVar[Mapping[str, Option]] = {
        "layers": Option("auto", (str, list), "auto: the last two stages; or layer names", choices=("auto",),
                         items=Option(None, str), min_len=1),
        "hybrid_masking": Option(False, bool, "mask support features the HM way (fssbench.masking)"),
    }
    default_train: ClassVar[TrainConfig] = TrainConfig(epochs=0)

    def layer_names(self) -> list[str]:
        if self.options["layers"] == "auto":
            return [spec.name for spec in self.backbone.stage_layers[-2:]]
        return list(self.options["layers"])

    @torch.no_grad()
    def predict(self, batch: EpisodeBatch) -> torch.Tensor:
        b, k = batch.support_images.shape[:2]
        size = batch.query_image.shape[-2:]
        names = self.layer_names()
        q_feats = self.backbone(batch.query_image, names)
        s_imgs = batch.support_images.flatten(0, 1)
        s_feats = self.backbone(s_imgs, names)
        fg = batch.support_fg.flatten(0, 1)
        bg = batch.support_bg.flatten(0, 1)
        if self.options["hybrid_masking"]:
            masked = {n: s_feats[n] * resize_mask(fg, s_feats[n].shape[-2:]) for n in names}
            s_feats_fg = hybrid_masked_features(self.backbone, s_imgs, fg, names, masked)
        else:
            s_feats_fg = s_feats
        scores = torch.zeros(b, 2, *size, device=batch.query_image.device)
        for n in names:
            proto_fg = masked_average(s_feats_fg[n], fg).view(b, k, -1).mean(1)
            proto_bg = masked_average(s_feats[n], bg).view(b, k, -1).mean(1)
            protos = torch.stack([proto_bg, proto_fg], dim=1)  # [B, 2, C]
            q = F.normalize(q_feats[n], dim=1)
            sim = torch.einsum("bchw,bnc->bnhw", q, F.normalize(protos, dim=2))
            scores += F.interpolate(sim, size=size, mode="bilinear", align_corners=True)
        return scores / len(names)
