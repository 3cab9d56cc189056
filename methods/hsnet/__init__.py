"""HSNet (Hypercorrelation Squeeze Network, ICCV 2021), registered as ``hsnet``.

Options: ``layers`` (``"auto"`` or layer names / three groups of names) and ``hybrid_masking``
(HM's support masking, ``methods.hm``). Released checkpoints: ``methods.hsnet.checkpoint``.
"""

from methods.hsnet.checkpoint import AuthorsCheckpoint, load_checkpoint, read_state_dict, split_state_dict
from methods.hsnet.conv4d import CenterPivotConv4d
from methods.hsnet.correlation import cosine_correlation, hypercorrelation_pyramid
from methods.hsnet.model import HPNLearner, HSNet, kshot_vote, select_layer_groups

__all__ = [
    "AuthorsCheckpoint",
    "CenterPivotConv4d",
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
