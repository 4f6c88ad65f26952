"""DCNv2: full-matrix cross network in parallel with an MLP, both over the flattened embeddings,
concatenated into one bias-free output layer.

`zero_cross_bias=true` starts the cross biases at zero as the official TTS4CTR code does; by default they
keep torch's Linear initialisation (uniform in +-1/sqrt(dim)).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ttsrec.models.base import Member
from ttsrec.models.layers import MLP, CrossNetwork


class DCNv2(Member):
    backbone = "dcnv2"
    full_rank = True
    depth_knobs = ("num_cross_layers", "mlp_dims")
    width_knobs = ("mlp_dims",)

    def __init__(self, vocab_sizes: Sequence[int], *, embed_dim: int = 16,
                 mlp_dims: Sequence[int] = (1024, 512, 256), num_cross_layers: int = 3,
                 zero_cross_bias: bool = False):
        super().__init__(vocab_sizes, embed_dim)
        flat_dim = self.num_fields * embed_dim
        self.cross = CrossNetwork(flat_dim, num_cross_layers, full_rank=self.full_rank)
        if zero_cross_bias:
            for linear in self.cross.weights:
                if linear.bias is not None:  # DCN's rank-1 biases already start at zero
                    nn.init.zeros_(linear.bias)
        self.mlp = MLP(flat_dim, mlp_dims, output_layer=False)
        self.head = nn.Linear(flat_dim + self.mlp.out_dim, 1, bias=False)

    def forward(self, feat_ids: torch.Tensor) -> torch.Tensor:
        _, flat = self.flat_embedding(feat_ids)
        return self.head(torch.cat((self.cross(flat), self.mlp(flat)), dim=1))
