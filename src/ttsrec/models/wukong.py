"""Wukong: a stack of Wukong layers (linear-compress block + low-rank FM block, residual,
LayerNorm) over the field embeddings, then an MLP head on the flattened result."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ttsrec.models.base import Member
from ttsrec.models.layers import MLP, WukongLayer


class Wukong(Member):
    backbone = "wukong"
    depth_knobs = ("num_layers", "mlp_dims")
    width_knobs = ("num_embed_lcb", "num_embed_fmb", "rank", "fm_mlp_dims", "mlp_dims")

    def __init__(self, vocab_sizes: Sequence[int], *, embed_dim: int = 16,
                 mlp_dims: Sequence[int] = (1024, 512, 256), num_layers: int = 3,
                 num_embed_lcb: int = 16, num_embed_fmb: int = 16, rank: int = 24,
                 fm_mlp_dims: Sequence[int] = (512, 512)):
        super().__init__(vocab_sizes, embed_dim)
        layers, num_in = [], self.num_fields
        for _ in range(num_layers):
            layers.append(WukongLayer(num_in, embed_dim, num_embed_lcb, num_embed_fmb, rank, fm_mlp_dims))
            num_in = num_embed_lcb + num_embed_fmb
        self.layers = nn.Sequential(*layers)
        self.mlp = MLP(num_in * embed_dim, mlp_dims)

    def forward(self, feat_ids: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.layers(self.embedding(feat_ids)).flatten(1))
