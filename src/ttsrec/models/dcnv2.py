"""DCNv2: full-matrix cross network in parallel with an MLP, both over the flattened embeddings,
concatenated into one bias-free output layer.

`zero_cross_bias=true` starts the cross biases at zero as the official TTS4CTR code does; by default they
keep torch's Linear initialisation (uniform in +-1/sqrt(dim)). `num_modules=K` is the paper's width
scaling: K cross networks, each over its own embedding table; the MLP reads all K tables' embeddings and
the output layer all K cross outputs.
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
    module_depth_knob = "num_cross_layers"
    module_width_knob = "num_modules"

    def __init__(self, vocab_sizes: Sequence[int], *, embed_dim: int = 16,
                 mlp_dims: Sequence[int] = (1024, 512, 256), num_cross_layers: int = 3,
                 zero_cross_bias: bool = False, num_modules: int = 1):
        super().__init__(vocab_sizes, embed_dim)
        flat_dim = self.num_fields * embed_dim
        self.cross = CrossNetwork(flat_dim, num_cross_layers, full_rank=self.full_rank)
        if zero_cross_bias:
            for linear in self.cross.weights:
                if linear.bias is not None:  # DCN's rank-1 biases already start at zero
                    nn.init.zeros_(linear.bias)
        self.extra_tables = self.extra_embeddings(num_modules)
        self.extra_crosses = nn.ModuleList(CrossNetwork(flat_dim, num_cross_layers, full_rank=self.full_rank)
                                           for _ in range(num_modules - 1))
        self.mlp = MLP(flat_dim * num_modules, mlp_dims, output_layer=False)
        self.head = nn.Linear(flat_dim * num_modules + self.mlp.out_dim, 1, bias=False)

    def forward(self, feat_ids: torch.Tensor) -> torch.Tensor:
        _, flat = self.flat_embedding(feat_ids)
        if not self.extra_tables:
            return self.head(torch.cat((self.cross(flat), self.mlp(flat)), dim=1))
        flats = [flat, *(table(feat_ids).flatten(1) for table in self.extra_tables)]
        crosses = [self.cross(flat), *(c(f) for c, f in zip(self.extra_crosses, flats[1:], strict=True))]
        return self.head(torch.cat((*crosses, self.mlp(torch.cat(flats, dim=1))), dim=1))
