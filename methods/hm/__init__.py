"""HM: Hybrid Masking for few-shot segmentation (Moon et al., ECCV 2022).

``hybrid_masked_features`` is a switch for any method that masks support features (HSNet's
``hybrid_masking`` option uses it). ``hm`` is HSNet with hybrid masking on, the HSNet-HM of the paper;
the authors' HSNet-HM checkpoints use HSNet's parameter names and load the same way.
"""

from typing import Any

from fssbench.methods import register_method
from methods.hm.masking import hybrid_combine, hybrid_masked_features, input_masked_images
from methods.hsnet.model import HSNet


@register_method
class HM(HSNet):
    """HSNet-HM: HSNet whose support features are hybrid-masked (option ``hybrid_masking``, default on)."""

    name = "hm"
    default_config: dict[str, Any] = {**HSNet.default_config, "hybrid_masking": True}


__all__ = ["HM", "hybrid_combine", "hybrid_masked_features", "input_masked_images"]
