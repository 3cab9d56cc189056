"""HSNet (Hypercorrelation Squeeze Network, ICCV 2021), registered as ``hsnet``, and HSNet-HM as ``hm``.

Options: ``layers`` (``"auto"`` or layer names / three groups of names), ``hybrid_masking``
(HM's support masking, ``fssbench.masking``) and ``fg_weight``. Released checkpoints:
``methods.hsnet.checkpoint`` (a suite's ``checkpoint:`` entry loads them).
"""

from methods.hsnet.checkpoint import AuthorsCheckpoint, load_checkpoint, read_state_dict, split_state_dict
from methods.hsnet.conv4d import CenterPivotConv4d
from methods.hsnet.correlation import cosine_correlation, hypercorrelation_pyramid
from methods.hsnet.hm import HM
from methods.hsnet.model import HPNLearner, HSNet, kshot_vote, select_layer_groups

__all__ = [
    "AuthorsCheckpoint",
    "CenterPivotConv4d",
    "HM",
    "HPNLearner",
    "HSNet",
    "cosine_correlation",
    "hypercorrelation_pyramid",
    "kshot_vote",
    "load_checkpoint",
    "read_state_dict",
    "select_layer_groups",
    "split_state_dict",
]
