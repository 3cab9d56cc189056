"""HM: Hybrid Masking for few-shot segmentation (Moon et al., ECCV 2022), registered as ``hm``.

HSNet-HM is HSNet whose support features are hybrid-masked (``fssbench.masking``; the option
``hybrid_masking``, default on here). It lives beside HSNet because it *is* HSNet's network with one
switch set, so no method package imports another. The authors' HSNet-HM checkpoints use HSNet's
parameter names and load the same way.
"""

from dataclasses import replace

from fssbench.methods import register_method
from methods.hsnet.model import HSNet


@register_method
class HM(HSNet):
    """HSNet-HM: HSNet with hybrid-masked support features."""

    name = "hm"
    option_specs = {**HSNet.option_specs, "hybrid_masking": replace(HSNet.option_specs["hybrid_masking"], default=True)}
