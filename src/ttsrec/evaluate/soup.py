"""Model merging by weight averaging: a uniform soup of same-architecture members, scored like a member.

The paper reports that averaging the weights of independently trained seeds falls to near-random AUC
(their embeddings and hidden units are not aligned); this measures it next to merging their logits.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from ttsrec.errors import UserError


def can_soup(models: Sequence[nn.Module]) -> bool:
    """Same backbone and hparams (so the same parameter shapes)."""
    first = models[0]
    return len(models) > 1 and all(
        getattr(m, "backbone", None) == getattr(first, "backbone", None)
        and getattr(m, "hparams", None) == getattr(first, "hparams", None) for m in models)


@torch.no_grad()
def uniform_soup(models: Sequence[nn.Module]) -> nn.Module:
    """A copy of the first model whose every floating tensor is the mean of the members' tensors."""
    if not can_soup(models):
        raise UserError("a weight-averaged soup needs at least two members of one architecture")
    soup = copy.deepcopy(models[0])
    states = [m.state_dict() for m in models]
    merged = {k: (torch.stack([s[k] for s in states]).mean(0) if v.is_floating_point() else v)
              for k, v in states[0].items()}
    soup.load_state_dict(merged)
    return soup.eval()
