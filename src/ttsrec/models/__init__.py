"""The model zoo: the paper's nine CTR backbones as exportable members (design §2-§3)."""

from ttsrec.models.base import Member
from ttsrec.models.cost import Cost, model_cost
from ttsrec.models.registry import (
    BACKBONES,
    backbone_class,
    build_model,
    default_hparams,
    parse_members,
    resolve_hparams,
)

__all__ = [
    "BACKBONES",
    "Cost",
    "Member",
    "backbone_class",
    "build_model",
    "default_hparams",
    "model_cost",
    "parse_members",
    "resolve_hparams",
]
