"""FM: bias + first-order weights + second-order factorised interactions (no MLP)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ttsrec.models.base import Member
from ttsrec.models.layers import FeatureEmbedding, FMInteraction


class FM(Member):
    backbone = "fm"
    width_knobs = ("embed_dim",)

    def __init__(self, vocab_sizes: Sequence[int], *, embed_dim: int = 16):
        super().__init__(vocab_sizes, embed_dim)
        self.linear = FeatureEmbedding(self.vocab_sizes, 1)
        self.bias = nn.Parameter(torch.zeros(1))
        self.fm = FMInteraction()

    def fm_logit(self, feat_ids: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """First order + second order + bias, [B, 1]."""
        return self.linear(feat_ids).sum(dim=1) + self.fm(emb) + self.bias

    def forward(self, feat_ids: torch.Tensor) -> torch.Tensor:
        return self.fm_logit(feat_ids, self.embedding(feat_ids))
