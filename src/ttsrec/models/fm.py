"""FM: bias + first-order weights + second-order factorised interactions (no MLP).

`first_order=false, bias=false` is the official TTS4CTR FM/DeepFM (second order only); ours keeps the
classic FM terms by default.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ttsrec.models.base import Member
from ttsrec.models.layers import FeatureEmbedding, FMInteraction


class FM(Member):
    backbone = "fm"
    width_knobs = ("embed_dim",)

    def __init__(self, vocab_sizes: Sequence[int], *, embed_dim: int = 16, first_order: bool = True,
                 bias: bool = True):
        super().__init__(vocab_sizes, embed_dim)
        self.linear = FeatureEmbedding(self.vocab_sizes, 1) if first_order else None
        self.bias = nn.Parameter(torch.zeros(1)) if bias else None
        self.fm = FMInteraction()

    def fm_logit(self, feat_ids: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Second order (+ first order, + bias where enabled), [B, 1]."""
        logit = self.fm(emb)
        if self.linear is not None:
            logit = logit + self.linear(feat_ids).sum(dim=1)
        if self.bias is not None:
            logit = logit + self.bias
        return logit

    def forward(self, feat_ids: torch.Tensor) -> torch.Tensor:
        return self.fm_logit(feat_ids, self.embedding(feat_ids))
